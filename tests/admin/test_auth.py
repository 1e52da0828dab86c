"""The admin API's credential chain: admin tokens, refused API keys, and the identity layer's
session seam (plugged here with plain functions over a real store, as the identity layer
plugs its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relaygate.accounts import tokens
from relaygate.accounts.principal import Principal
from relaygate.admin import auth
from relaygate.errors import AuthenticationFailed, PermissionDenied
from relaygate.store.sql import SqlStore

CLI = Principal(via="cli", id="cli", role="admin")
MEMBER = Principal(via="session", id="usr_1", role="member", account_id="acct_1",
                   session_id="ses_1")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'auth.db'}")
    await opened.upgrade()
    yield opened
    await opened.close()


@pytest.fixture
def sessions() -> Iterator[auth.SessionSeam]:
    saved = replace(auth.SESSIONS)

    async def verify(store: SqlStore, cookie: str, address: str | None) -> Principal | None:
        return replace(MEMBER, address=address) if cookie == "good-session" else None

    def check_csrf(store: SqlStore, principal: Principal, token: str | None) -> None:
        if token != "csrf-of-ses_1":
            raise PermissionDenied("Missing or wrong CSRF token")

    auth.SESSIONS.verify_session = verify
    auth.SESSIONS.check_csrf = check_csrf
    yield auth.SESSIONS
    auth.SESSIONS.verify_session = saved.verify_session
    auth.SESSIONS.check_csrf = saved.check_csrf


def scope(method: str = "GET", **headers: str) -> dict[str, Any]:
    return {
        "method": method,
        "client": ("192.0.2.7", 5555),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


async def test_an_admin_token_is_an_admin(store: SqlStore) -> None:
    record, token = await tokens.create_admin_token(store, CLI, "ci")
    principal = await auth.authenticate(store, scope(authorization=f"Bearer {token}"))
    assert (principal.via, principal.id, principal.role, principal.address) == (
        "admin_token", record.id, "admin", "192.0.2.7")
    await auth.check_write(store, scope("POST"), principal)  # no CSRF for a token


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
        pytest.param({"cookie": "relaygate_session=good-session"}, "sign in again",
                     id="no-identity-layer-yet"),
    ],
)
async def test_anything_else_is_401(store: SqlStore, headers: dict[str, str], needle: str
                                    ) -> None:
    with pytest.raises(AuthenticationFailed) as raised:
        await auth.authenticate(store, scope(**headers))
    assert needle in raised.value.message


async def test_a_session_cookie_through_the_seam_and_its_csrf(
    store: SqlStore, sessions: auth.SessionSeam
) -> None:
    principal = await auth.authenticate(store, scope(cookie="a=b; relaygate_session=good-session"))
    assert principal == replace(MEMBER, address="192.0.2.7")
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(store, scope(cookie="relaygate_session=signed-out"))
    await auth.check_write(store, scope("GET"), principal)  # reads need no CSRF token
    with pytest.raises(PermissionDenied):
        await auth.check_write(store, scope("POST"), principal)
    with pytest.raises(PermissionDenied):
        await auth.check_write(store, scope("PATCH", x_csrf_token="forged"), principal)
    await auth.check_write(store, scope("DELETE", x_csrf_token="csrf-of-ses_1"), principal)
    # a bearer header wins over a cookie, and an API key is refused even beside a session
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(
            store, scope(authorization="Bearer sk-x", cookie="relaygate_session=good-session")
        )


async def test_without_the_identity_layer_a_session_cannot_write(store: SqlStore) -> None:
    with pytest.raises(PermissionDenied):
        await auth.check_write(store, scope("POST", x_csrf_token="anything"), MEMBER)
