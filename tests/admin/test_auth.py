"""The admin API's credential chain: admin tokens, refused API keys, unknown sessions (the
session path itself is tested over HTTP in test_sign_in_http.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaygate.accounts import tokens
from relaygate.accounts.principal import Principal
from relaygate.admin import auth
from relaygate.errors import AuthenticationFailed
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore

SETTINGS = Settings()
CLI = Principal(via="cli", id="cli", role="admin")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'auth.db'}")
    await opened.upgrade()
    yield opened
    await opened.close()


def scope(method: str = "GET", **headers: str) -> dict[str, Any]:
    return {
        "method": method,
        "client": ("192.0.2.7", 5555),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


async def test_an_admin_token_is_an_admin(store: SqlStore) -> None:
    record, token = await tokens.create_admin_token(store, CLI, "ci")
    principal = await auth.authenticate(store, SETTINGS, scope(authorization=f"Bearer {token}"))
    assert (principal.via, principal.id, principal.role, principal.address) == (
        "admin_token", record.id, "admin", "192.0.2.7")
    auth.check_write(SETTINGS, scope("POST"), principal)  # no CSRF for a token


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        pytest.param({}, "needs 'Authorization: Bearer", id="nothing"),
        pytest.param({"authorization": "Bearer sk-abc"}, "API keys are not accepted",
                     id="api-key"),
        pytest.param({"authorization": "Basic abc"}, "Malformed", id="not-bearer"),
        pytest.param({"authorization": "Bearer something"}, "takes admin tokens",
                     id="unknown-kind"),
        pytest.param({"authorization": "Bearer rga-unknown"}, "Invalid admin token",
                     id="unknown-token"),
        pytest.param({"cookie": "relaygate_session=ses_0.forged"}, "sign in again",
                     id="unknown-session"),
    ],
)
async def test_anything_else_is_401(store: SqlStore, headers: dict[str, str], needle: str
                                    ) -> None:
    with pytest.raises(AuthenticationFailed) as raised:
        await auth.authenticate(store, SETTINGS, scope(**headers))
    assert needle in raised.value.message
