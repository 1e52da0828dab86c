"""One real gateway per module, with the console on and a first admin made through the setup
link; tests make their own accounts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import catalog
from tests.console.support import PASSWORD, User, setup_link
from tests.support.gateway import GatewayProcess

ADMIN_EMAIL = "operator@example.com"
FAST_HASH = {"password_hash_memory_kib": 8192, "password_hash_time_cost": 1,
             "password_hash_parallelism": 1}
_ACCOUNT = re.compile(r"/console/accounts/(acct_[A-Za-z0-9_]+)")


@dataclass
class Console:
    gateway: GatewayProcess
    admin: User

    def account(self, name: str, credits: str = "10") -> str:
        """A new account made on the Accounts page; its id."""
        response = self.admin.post("/console/accounts", {"name": name, "credits_usd": credits})
        assert response.status_code == 303, response.text[:2000]
        found = _ACCOUNT.search(response.headers["location"])
        assert found
        return found.group(1)

    def member(self, account_id: str, email: str) -> User:
        """A member of ``account_id``, added by the admin, signed in."""
        response = self.admin.post(f"/console/accounts/{account_id}/members",
                                   {"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text[:2000]
        user = User(self.gateway)
        user.sign_in(email)
        return user


def start_console(directory: object, **overrides: object) -> GatewayProcess:
    config = catalog("http://127.0.0.1:9/v1", key_refresh_seconds=0.1, **FAST_HASH, **overrides)
    return GatewayProcess(directory, config).start()  # type: ignore[arg-type]


def first_admin(gateway: GatewayProcess) -> User:
    admin = User(gateway)
    link = setup_link(gateway)
    response = admin.client.post(link, data={"email": ADMIN_EMAIL, "password": PASSWORD,
                                             "password_again": PASSWORD})
    assert response.status_code == 303, response.text[:2000]
    admin.sign_in(ADMIN_EMAIL)
    return admin


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    gateway = start_console(tmp_path_factory.mktemp("console-gw"))
    admin = None
    try:
        admin = first_admin(gateway)
        yield Console(gateway, admin)
    finally:
        if admin is not None:
            admin.close()
        gateway.stop()
