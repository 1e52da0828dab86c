"""What a security review of the admin API found, each pinned: far-future times, digits that
are not ASCII, cursors with huge integers, login CSRF from a cross-site form, what a member sees
of the operator in the audit log, and a
member reaching another account by any route."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.admin.test_sign_in_http import PASSWORD, call, cli, start
from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = start(tmp_path_factory.mktemp("review-gw"))
    try:
        yield gateway
    finally:
        gateway.stop()


def member(gateway: GatewayProcess, email: str) -> tuple[str, str, str]:
    account = cli(gateway, "accounts", "create", "--name", "M " + email)["id"]
    cli(gateway, "users", "create", "--email", email, "--role", "member", "--account", account,
        stdin=PASSWORD + "\n")
    status, got, body = call(gateway, "POST", "/session", {"email": email, "password": PASSWORD})
    assert status == 201, body
    return account, got["set-cookie"].split(";")[0], body["csrf_token"]


def raw(gateway: GatewayProcess, method: str, path: str, data: bytes | None,
        headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(gateway.url + "/admin/v1" + path, data=data, method=method)
    for k, v in headers.items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as exc:
        payload, status, got = exc.read(), exc.code, exc.headers
    return status, {k.lower(): v for k, v in got.items()}, json.loads(payload) if payload else None


def test_far_future_times_are_refused_and_change_nothing(gw: GatewayProcess) -> None:
    account, cookie, csrf = member(gw, "far@example.com")
    for expires in (10**12, 2**63, "9999-12-31T23:59:59-12:00"):
        status, _, body = call(gw, "POST", f"/accounts/{account}/keys",
                               {"name": "x", "expires_at": expires}, Cookie=cookie,
                               X_CSRF_Token=csrf)
        assert status == 400, body
        assert body["error"]["type"] == "invalid_request_error"
    status, _, body = call(gw, "GET", f"/accounts/{account}/keys", Cookie=cookie)
    assert (status, body["data"]) == (200, [])
    done = subprocess.run([sys.executable, "-m", "relaygate", "keys", "list", "--json",
                           "--config", str(gw.config_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_digits_that_are_not_ascii_are_400(gw: GatewayProcess) -> None:
    _, cookie, _ = member(gw, "digits@example.com")
    for path in ["/accounts?limit=%C2%B2", "/usage?from=%C2%B2", "/requests?to=%C2%B2"]:
        status, _, body = call(gw, "GET", path, Cookie=cookie)
        assert status == 400, (path, body)


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_cursors_with_huge_integers_are_400(gw: GatewayProcess) -> None:
    account, cookie, _ = member(gw, "cursor@example.com")
    for path in [f"/accounts?cursor={_cursor([10**100, 'x'])}",
                 f"/accounts/{account}/keys?cursor={_cursor([10**100, 'x'])}",
                 f"/audit?cursor={_cursor([10**100])}"]:
        status, _, body = call(gw, "GET", path, Cookie=cookie)
        assert status == 400, (path, body)


def test_a_cross_site_form_cannot_sign_anyone_in(gw: GatewayProcess) -> None:
    email = "attacker@example.com"
    account = cli(gw, "accounts", "create", "--name", "Attacker")["id"]
    password = "attacker-password="  # what <form enctype=text/plain> makes of name + '=' + value
    cli(gw, "users", "create", "--email", email, "--role", "member", "--account", account,
        stdin=password + "\n")
    form = ('{"email":"' + email + '","password":"attacker-password' + '=' + '"}\r\n').encode()
    status, got, body = raw(gw, "POST", "/session", form,
                            {"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert status == 400, body
    assert "set-cookie" not in got
    status, got, body = raw(gw, "POST", "/session", form,
                            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"})
    assert status == 403, body
    assert "set-cookie" not in got


def test_a_member_sees_the_operator_without_its_tokens_or_addresses(gw: GatewayProcess) -> None:
    account, cookie, _ = member(gw, "audit@example.com")
    token = cli(gw, "admin-token", "create", "--name", "ops")["token"]
    status, _, _ = call(gw, "PATCH", f"/accounts/{account}", {"rpm": 5},
                        Authorization=f"Bearer {token}")
    assert status == 200
    entries = call(gw, "GET", "/audit", Cookie=cookie)[2]["data"]
    operator = [e for e in entries if e["actor"] == "operator"]
    assert operator, entries
    assert all(e["address"] is None for e in operator)
    assert not [e for e in entries if e["actor"].startswith(("admin_token:", "cli"))]
    mine = [e for e in entries if e["actor"].startswith("user:")]
    assert mine
    assert {e["address"] for e in mine} == {"127.0.0.1"}


def test_member_cannot_reach_another_account_by_any_route(gw: GatewayProcess) -> None:
    ours, cookie, csrf = member(gw, "ours@example.com")
    token = cli(gw, "admin-token", "create", "--name", "ctl")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    theirs = call(gw, "POST", "/accounts", {"name": "Theirs", "credits_usd": "5"}, **auth)[2]["id"]
    key = call(gw, "POST", f"/accounts/{theirs}/keys", {"name": "k"}, **auth)[2]["id"]
    code = call(gw, "POST", "/redemption-codes", {"count": 1, "amount_usd": "1"}, **auth)[2]
    w = {"Cookie": cookie, "X_CSRF_Token": csrf}
    for method, path, body, want in [
        ("GET", f"/keys/{key}", None, 404),
        ("PATCH", f"/keys/{key}", {"name": "x"}, 404),
        ("DELETE", f"/keys/{key}", None, 404),
        ("POST", f"/accounts/{theirs}/redeem", {"code": code["data"][0]["code"]}, 404),
        ("POST", f"/accounts/{theirs}/credits", {"amount_usd": "1"}, 404),
        ("POST", f"/accounts/{ours}/credits", {"amount_usd": "1"}, 403),
        ("PATCH", f"/accounts/{ours}", {"status": "active"}, 403),
        ("GET", f"/usage?account={theirs}", None, 404),
        ("GET", "/redemption-codes", None, 403),
        ("POST", "/redemption-codes", {"count": 1, "amount_usd": "1"}, 403),
        ("POST", "/accounts", {"name": "n"}, 403),
    ]:
        status, _, answer = call(gw, method, path, body, **w)
        assert status == want, (method, path, answer)
        assert set(answer) == {"error"}
    assert call(gw, "GET", f"/requests?key={key}", None, **w)[2]["data"] == []
    assert call(gw, "GET", f"/usage?key={key}&group_by=key", None, **w)[2]["data"] == []
    audit = call(gw, "GET", "/audit?limit=200", None, **w)[2]["data"]
    assert all(e["account_id"] == ours for e in audit)
    # an API key is refused by the admin API, an admin token by the API
    made = call(gw, "POST", f"/accounts/{ours}/keys", {"name": "k"}, **w)[2]["key"]
    assert call(gw, "GET", "/accounts", Authorization=f"Bearer {made}")[0] == 401
    assert gw.get("/v1/credits", token)[0] == 401


def test_a_member_of_a_suspended_account_reads_but_changes_nothing(gw: GatewayProcess) -> None:
    ours, cookie, csrf = member(gw, "suspended@example.com")
    w = {"Cookie": cookie, "X_CSRF_Token": csrf}
    key = call(gw, "POST", f"/accounts/{ours}/keys",
               {"name": "capped", "spend_limit_usd": "1", "models": []}, **w)[2]["id"]
    token = cli(gw, "admin-token", "create", "--name", "suspender")["token"]
    code = call(gw, "POST", "/redemption-codes", {"count": 1, "amount_usd": "1"},
                Authorization=f"Bearer {token}")[2]["data"][0]["code"]
    status, _, _ = call(gw, "PATCH", f"/accounts/{ours}", {"status": "suspended"},
                        Authorization=f"Bearer {token}")
    assert status == 200

    def state() -> tuple[Any, ...]:
        reads = [f"/accounts/{ours}", f"/accounts/{ours}/keys", f"/keys/{key}", "/audit",
                 f"/usage?account={ours}", f"/requests?account={ours}", "/accounts", "/session"]
        answers = []
        for path in reads:  # every read still answers
            status, _, body = call(gw, "GET", path, None, **w)
            assert status == 200, (path, body)
            answers.append(body)
        return tuple(json.dumps(a, sort_keys=True) for a in answers)

    before = state()
    assert json.loads(before[0])["status"] == "suspended"
    for method, path, body in [
        ("PATCH", f"/keys/{key}", {"spend_limit_usd": None, "models": None}),
        ("PATCH", f"/keys/{key}", {"name": "renamed"}),
        ("DELETE", f"/keys/{key}", None),
        ("POST", f"/accounts/{ours}/keys", {"name": "another"}),
        ("POST", f"/accounts/{ours}/redeem", {"code": code}),
        ("PATCH", f"/accounts/{ours}", {"low_balance_usd": "5"}),
        ("PATCH", f"/accounts/{ours}", {"name": "renamed"}),
    ]:
        status, _, answer = call(gw, method, path, body, **w)
        assert status == 403, (method, path, answer)
        assert set(answer) == {"error"}
        assert answer["error"]["type"] == "permission_error"
        assert "suspended" in answer["error"]["message"]
    assert state() == before  # nothing changed, and no audit entry was written
    # signing out is no change to the account: still allowed
    assert call(gw, "DELETE", "/session", None, **w)[0] == 200
    # the operator is unaffected: it may reactivate the account, and its member write again
    status, _, _ = call(gw, "PATCH", f"/accounts/{ours}", {"status": "active"},
                        Authorization=f"Bearer {token}")
    assert status == 200
    _, cookie, csrf = member_session(gw, "suspended@example.com")
    status, _, answer = call(gw, "PATCH", f"/keys/{key}", {"name": "renamed"}, Cookie=cookie,
                             X_CSRF_Token=csrf)
    assert status == 200, answer


def member_session(gateway: GatewayProcess, email: str) -> tuple[str, str, str]:
    status, got, body = call(gateway, "POST", "/session", {"email": email, "password": PASSWORD})
    assert status == 201, body
    return body["account_id"], got["set-cookie"].split(";")[0], body["csrf_token"]
