"""Console sessions through the real admin API (``/admin/v1/session``) of a real gateway
process: sign in, the session's CSRF token on writes, a member kept to its own account, the
trusted proxy headers, one error for every failed sign-in, throttling, sign-out, the audit log."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import catalog
from tests.support.gateway import GatewayProcess

PASSWORD = "correct horse battery staple"
FAST = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192,
        "password_hash_parallelism": 1}

Call = Callable[..., tuple[int, dict[str, str], Any]]


def call(gateway: GatewayProcess, method: str, path: str, body: Any = None,
         **headers: str) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(gateway.url + "/admin/v1" + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, exc.headers
    return status, {k.lower(): v for k, v in got.items()}, json.loads(raw) if raw else None


def cli(gateway: GatewayProcess, *args: str, stdin: str = "") -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "relaygate", *args, "--json", "--config",
         str(gateway.config_path)],
        input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def start(directory: Path, **settings: Any) -> GatewayProcess:
    config = catalog("http://127.0.0.1:9/v1", key_refresh_seconds=0.1, **FAST, **settings)
    return GatewayProcess(directory, config).start()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = start(tmp_path_factory.mktemp("signin-gw"))
    try:
        cli(gateway, "users", "create", "--email", "ops@example.com", "--role", "admin",
            stdin=PASSWORD + "\n")
        yield gateway
    finally:
        gateway.stop()


def sign_in(gateway: GatewayProcess, email: str, **headers: str) -> tuple[str, str]:
    status, got, body = call(gateway, "POST", "/session",
                             {"email": email, "password": PASSWORD}, **headers)
    assert status == 201, body
    return got["set-cookie"].split(";")[0], body["csrf_token"]


def test_an_admin_signs_in_writes_with_its_csrf_token_and_signs_out(
    gateway: GatewayProcess,
) -> None:
    spoof = {"X_Forwarded_For": "6.6.6.6", "X_Forwarded_Proto": "https"}
    status, got, body = call(gateway, "POST", "/session",
                             {"email": "OPS@example.com ", "password": PASSWORD}, **spoof)
    assert status == 201, body
    set_cookie = got["set-cookie"]
    assert set_cookie.startswith("relaygate_session=ses_")  # spoofed proto ignored: not Secure
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Secure" not in set_cookie
    assert (body["role"], body["email"], body["account_id"]) == ("admin", "ops@example.com",
                                                                 None)
    cookie, csrf = set_cookie.split(";")[0], body["csrf_token"]
    assert PASSWORD not in json.dumps(body)

    assert call(gateway, "GET", "/session", Cookie=cookie)[2]["csrf_token"] == csrf
    assert call(gateway, "GET", "/accounts", Cookie=cookie)[0] == 200  # reads need no token
    new = {"name": "Made by a session"}
    assert call(gateway, "POST", "/accounts", new, Cookie=cookie)[0] == 403
    assert call(gateway, "POST", "/accounts", new, Cookie=cookie,
                X_CSRF_Token="x" * 43)[0] == 403
    status, _, made = call(gateway, "POST", "/accounts", new, Cookie=cookie, X_CSRF_Token=csrf)
    assert status == 201, made

    # sign-out is a write too; it ends the session and clears the cookie
    assert call(gateway, "DELETE", "/session", Cookie=cookie)[0] == 403
    status, got, body = call(gateway, "DELETE", "/session", Cookie=cookie, X_CSRF_Token=csrf)
    assert (status, body["signed_out"]) == (200, True)
    assert got["set-cookie"].startswith("relaygate_session=;")
    assert "Max-Age=0" in got["set-cookie"]
    assert call(gateway, "GET", "/accounts", Cookie=cookie)[0] == 401

    # the audit log names the user, the real peer address and the actions
    token = cli(gateway, "admin-token", "create", "--name", "audit-reader")["token"]
    entries = call(gateway, "GET", "/audit?limit=20", Authorization=f"Bearer {token}")[2]["data"]
    mine = [e for e in entries if e["actor"].startswith("user:")]
    actions = {e["action"] for e in mine}
    assert {"session.sign_in", "session.sign_out", "account.create"} <= actions
    assert {e["address"] for e in mine} == {"127.0.0.1"}


def test_a_member_sees_only_its_own_account(gateway: GatewayProcess) -> None:
    ours = cli(gateway, "accounts", "create", "--name", "Ours")["id"]
    theirs = cli(gateway, "accounts", "create", "--name", "Theirs")["id"]
    cli(gateway, "users", "create", "--email", "member@example.com", "--role", "member",
        "--account", ours, stdin=PASSWORD + "\n")
    cookie, csrf = sign_in(gateway, "member@example.com")
    assert call(gateway, "GET", f"/accounts/{ours}", Cookie=cookie)[0] == 200
    listed = call(gateway, "GET", "/accounts", Cookie=cookie)[2]["data"]
    assert [a["id"] for a in listed] == [ours]
    for method, path, body in [("GET", f"/accounts/{theirs}", None),
                               ("GET", f"/accounts/{theirs}/keys", None),
                               ("POST", f"/accounts/{theirs}/keys", {"name": "x"}),
                               ("PATCH", f"/accounts/{theirs}", {"name": "mine now"})]:
        status, _, answer = call(gateway, method, path, body, Cookie=cookie, X_CSRF_Token=csrf)
        assert status == 404, (method, path, answer)
        assert answer["error"]["type"] == "not_found_error"
    status, _, made = call(gateway, "POST", f"/accounts/{ours}/keys", {"name": "laptop"},
                           Cookie=cookie, X_CSRF_Token=csrf)
    assert status == 201
    assert made["key"].startswith("sk-")


def test_behind_a_trusted_proxy_over_https(tmp_path: Path) -> None:
    gateway = start(tmp_path, trusted_proxy_headers=["x-forwarded-for", "x-forwarded-proto"])
    try:
        cli(gateway, "users", "create", "--email", "ops@example.com", "--role", "admin",
            stdin=PASSWORD + "\n")
        forwarded = {"X_Forwarded_For": "6.6.6.6, 198.51.100.20", "X_Forwarded_Proto": "https"}
        status, got, _ = call(gateway, "POST", "/session",
                              {"email": "ops@example.com", "password": PASSWORD}, **forwarded)
        assert status == 201
        assert got["set-cookie"].startswith("__Host-relaygate_session=ses_")
        assert "Secure" in got["set-cookie"]
        cookie = got["set-cookie"].split(";")[0]
        assert call(gateway, "GET", "/session", Cookie=cookie, **forwarded)[0] == 200
        # the same cookie over plain HTTP is not read: __Host- cookies belong to HTTPS
        assert call(gateway, "GET", "/session", Cookie=cookie)[0] == 401
    finally:
        gateway.stop()


def test_failed_sign_ins_look_alike_then_are_throttled(tmp_path: Path) -> None:
    gateway = start(tmp_path, sign_in_failures_per_email=2)
    try:
        cli(gateway, "users", "create", "--email", "ops@example.com", "--role", "admin",
            stdin=PASSWORD + "\n")
        answers = [call(gateway, "POST", "/session", {"email": email, "password": "wrong pw"})
                   for email in ("ops@example.com", "nobody@example.com")]
        assert answers[0][0] == answers[1][0] == 401
        assert answers[0][2] == answers[1][2]
        assert answers[0][2]["error"]["message"] == "Wrong email or password"
        call(gateway, "POST", "/session", {"email": "ops@example.com", "password": "wrong"})
        status, got, body = call(gateway, "POST", "/session",
                                 {"email": "ops@example.com", "password": PASSWORD})
        assert status == 429
        assert body["error"]["type"] == "rate_limit_error"
        assert int(got["retry-after"]) >= 1
        # bad bodies are 400 and set no cookie
        for bad in ({"email": "ops@example.com"}, {"email": "a", "password": "b", "x": 1},
                    {"email": "x" * 400, "password": PASSWORD}):
            status, got, _ = call(gateway, "POST", "/session", bad)
            assert status == 400
            assert "set-cookie" not in got
    finally:
        gateway.stop()
