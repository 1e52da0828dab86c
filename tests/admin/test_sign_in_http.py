"""Sign-in over real HTTP on loopback: a small ASGI app wires sessions and cookies the way the
admin API does (sign in, who am I, a write that needs the CSRF token, sign out), served by
uvicorn with relaygate's protocol, so the scopes are the server's own."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from relaygate.accounts.principal import Principal
from relaygate.accounts.sessions import (
    check_csrf,
    csrf_token,
    sign_in,
    sign_out,
    verify_session,
)
from relaygate.accounts.users import create_user
from relaygate.admin.cookies import (
    clear_session_cookie,
    client_address,
    session_cookie,
    session_cookie_value,
)
from relaygate.api.http import Receive, Scope, Send, header, read_body, send_bytes, send_error
from relaygate.errors import ApiError, AuthenticationFailed
from relaygate.serving import Limits
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore
from tests.accounts.identity_support import FAST, PASSWORD
from tests.serving.support import ServerThread

EMAIL = "ops@example.com"


class SignInApp:
    """What the admin router does with identity's functions, in a few lines."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        self.database_url = database_url
        self.settings = settings
        self.store: SqlStore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.store is None:  # opened on the server's own event loop
            self.store = SqlStore(self.database_url)
        try:
            await self.route(self.store, scope, receive, send)
        except ApiError as error:
            await send_error(send, error)

    async def route(self, store: SqlStore, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/close":  # the store belongs to the server's loop: closed there
            await store.close()
            await send_bytes(send, 204, b"")
            return
        settings = self.settings
        address = client_address(scope, settings)
        cookie = session_cookie_value(scope, settings)
        if scope["path"] == "/sign-in":
            body = json.loads(await read_body(scope, receive, 65536))
            _, value = await sign_in(store, settings, body["email"], body["password"], address)
            payload = json.dumps({"csrf_token": csrf_token(value)}).encode()
            await send_bytes(send, 200, payload, headers=[session_cookie(scope, settings, value)])
            return
        if scope["path"] == "/sign-out":
            await sign_out(store, cookie)
            await send_bytes(send, 204, b"", headers=[clear_session_cookie(scope, settings)])
            return
        principal = await verify_session(store, cookie, address)
        if principal is None:
            raise AuthenticationFailed("Sign in first")
        if scope["method"] == "POST":
            token = header(scope, b"x-csrf-token")
            check_csrf(cookie, principal, token.decode("latin-1") if token else None)
        await send_bytes(send, 200, json.dumps(_view(principal)).encode())


def _view(principal: Principal) -> dict[str, Any]:
    return {"id": principal.id, "role": principal.role, "address": principal.address}


def call(
    port: int, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status, got = response.status, response.headers
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, exc.headers
    return status, {k.lower(): v for k, v in got.items()}, json.loads(raw) if raw else None


@contextmanager
def served(app: SignInApp) -> Iterator[int]:
    """The app on loopback: its port; its store is closed before the server stops."""
    server = ServerThread(app, Limits())
    server.server.config.proxy_headers = False  # as `relaygate serve` runs uvicorn
    server.start()
    try:
        yield server.port
    finally:
        call(server.port, "POST", "/close")
        server.stop()


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'identity.db'}"

    async def prepare() -> None:
        store = SqlStore(url)
        try:
            await store.upgrade()
            await create_user(store, EMAIL, PASSWORD, "admin", None, settings=FAST)
        finally:
            await store.close()

    asyncio.run(prepare())
    return url


def test_over_plain_http_behind_no_trusted_proxy(database: str) -> None:
    with served(SignInApp(database, FAST)) as port:
        spoof = {"X_Forwarded_For": "6.6.6.6", "X_Forwarded_Proto": "https"}
        status, headers, body = call(
            port, "POST", "/sign-in", {"email": EMAIL, "password": PASSWORD}, **spoof
        )
        assert status == 200
        set_cookie = headers["set-cookie"]
        assert set_cookie.startswith("relaygate_session=ses_")
        assert "HttpOnly" in set_cookie
        assert "SameSite=Lax" in set_cookie
        assert "Secure" not in set_cookie
        cookie = set_cookie.split(";")[0]
        csrf = body["csrf_token"]
        # the spoofed headers were ignored: the address is the real peer
        status, _, me = call(port, "GET", "/me", Cookie=cookie, **spoof)
        assert (status, me["address"], me["role"]) == (200, "127.0.0.1", "admin")
        # a write needs the session's CSRF token
        assert call(port, "POST", "/me", {}, Cookie=cookie)[0] == 403
        assert call(port, "POST", "/me", {}, Cookie=cookie, X_CSRF_Token="x" * 43)[0] == 403
        assert call(port, "POST", "/me", {}, Cookie=cookie, X_CSRF_Token=csrf)[0] == 200
        # sign-out ends the session and clears the cookie
        status, headers, _ = call(port, "POST", "/sign-out", Cookie=cookie)
        assert status == 204
        assert headers["set-cookie"].startswith("relaygate_session=;")
        assert "Max-Age=0" in headers["set-cookie"]
        assert call(port, "GET", "/me", Cookie=cookie)[0] == 401


def test_behind_a_trusted_proxy_over_https(database: str) -> None:
    settings = msgspec.structs.replace(
        FAST, trusted_proxy_headers=["x-forwarded-for", "x-forwarded-proto"]
    )
    forwarded = {"X_Forwarded_For": "6.6.6.6, 198.51.100.20", "X_Forwarded_Proto": "https"}
    with served(SignInApp(database, settings)) as port:
        status, headers, _ = call(
            port, "POST", "/sign-in", {"email": EMAIL, "password": PASSWORD}, **forwarded
        )
        assert status == 200
        set_cookie = headers["set-cookie"]
        assert set_cookie.startswith("__Host-relaygate_session=ses_")
        assert "Secure" in set_cookie
        assert "Path=/" in set_cookie
        cookie = set_cookie.split(";")[0]
        status, _, me = call(port, "GET", "/me", Cookie=cookie, **forwarded)
        assert (status, me["address"]) == (200, "198.51.100.20")
        # the same cookie over plain HTTP is not read: __Host- cookies belong to HTTPS
        assert call(port, "GET", "/me", Cookie=cookie)[0] == 401


def test_failed_sign_ins_look_alike_then_are_throttled(database: str) -> None:
    settings = msgspec.structs.replace(FAST, sign_in_failures_per_email=2)
    with served(SignInApp(database, settings)) as port:
        answers = [
            call(port, "POST", "/sign-in", {"email": email, "password": "wrong password"})
            for email in (EMAIL, "nobody@example.com")
        ]
        (first_status, _, first), (second_status, _, second) = answers
        assert first_status == second_status == 401
        assert first == second
        assert first["error"]["message"] == "Wrong email or password"
        call(port, "POST", "/sign-in", {"email": EMAIL, "password": "wrong again"})
        status, headers, body = call(
            port, "POST", "/sign-in", {"email": EMAIL, "password": PASSWORD}
        )
        assert status == 429
        assert body["error"]["type"] == "rate_limit_error"
        assert 1 <= int(headers["retry-after"]) <= settings.sign_in_window_seconds
