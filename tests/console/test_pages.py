"""Every console page rendered against a real gateway, as a member and as an admin, and the
forms behind them: each write changes what the next page shows."""

from __future__ import annotations

import csv
import io
import json
import re

from tests.console.conftest import Console
from tests.console.support import User, wait_for
from tests.support.gateway import http

MODEL = "relaygate-simulator"


def _key_from(page: str) -> str:
    found = re.search(r'data-testid="new-key">(sk-[^<]+)</code>', page)
    assert found, page[:3000]
    return found.group(1)


def _chat(console: Console, key: str) -> dict[str, object]:
    status, _, raw = http("POST", console.gateway.url + "/v1/chat/completions",
                          {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                          key=key)
    assert status == 200, raw
    answer: dict[str, object] = json.loads(raw)
    return answer


def test_a_member_sees_and_uses_every_customer_page(console: Console) -> None:
    account = console.account("Member pages", "5")
    member = console.member(account, "pages@example.com")
    try:
        overview = member.page("/console/overview")
        assert "Member pages" in overview
        assert "$5.00" in overview
        keys = member.page("/console/keys")
        assert "No keys yet" in keys
        created = member.post("/console/keys", {"name": "ci", "rpm": "100", "models": MODEL,
                                                "spend_limit_usd": "2",
                                                "spend_limit_period": "month"})
        assert created.status_code == 201, created.text[:2000]
        key = _key_from(created.text)
        listed = member.page("/console/keys")
        assert key not in listed
        assert key[:10] in listed
        wait_for(lambda: console.gateway.get("/v1/credits", key)[0] == 200)
        answer = _chat(console, key)
        request_id = str(answer["id"])
        log = wait_for(lambda: (p := member.page("/console/requests")) and request_id in p and p)
        assert "Input" in log
        assert "Reasoning" in log
        found = member.page(f"/console/requests?request_id={request_id}")
        assert request_id in found
        assert "No request with this id" in member.page("/console/requests?request_id=nope")
        assert request_id in member.page(f"/console/requests?model={MODEL}&status=ok")
        assert "No requests match" in member.page("/console/requests?status=cancelled")
        for days in (7, 30, 90):
            assert MODEL in member.page(f"/console/usage?days={days}")
        exported = member.get("/console/usage.csv?days=7")
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {r["group"] for r in rows} == {"model", "key"}
        assert any(r["name"] == MODEL and int(r["requests"]) == 1 for r in rows)
        assert MODEL in member.page("/console/overview")
        billing = member.page("/console/billing")
        assert "Redeem a code" in billing
        assert "top-up" in billing
    finally:
        member.close()


def test_a_member_edits_and_revokes_a_key_and_redeems_a_code(console: Console) -> None:
    account = console.account("Edits", "1")
    member = console.member(account, "edits@example.com")
    try:
        member.page("/console/keys")
        created = member.post("/console/keys", {"name": "first"})
        key_id = re.search(r"(key_[0-9a-f]+)", created.text.split("new-key")[-1])
        assert key_id
        saved = member.post(f"/console/keys/{key_id.group(1)}", {"name": "renamed",
                                                                 "tpm": "5000"})
        assert saved.status_code == 200
        assert "renamed" in saved.text
        bad = member.post(f"/console/keys/{key_id.group(1)}", {"name": "x", "rpm": "-3"})
        assert bad.status_code == 400
        assert "rpm" in bad.text
        revoked = member.post(f"/console/keys/{key_id.group(1)}/revoke")
        assert revoked.status_code == 200
        assert "revoked" in revoked.text
        made = console.admin.post("/console/codes", {"count": "2", "amount_usd": "3",
                                                     "format": "page"})
        assert made.status_code == 201
        codes = re.search(r'data-testid="new-codes">([^<]+)</pre>', made.text)
        assert codes
        code = codes.group(1).split()[0]
        member.page("/console/billing")
        redeemed = member.post("/console/billing/redeem", {"code": code})
        assert redeemed.status_code == 200
        assert "Code redeemed" in redeemed.text
        assert "$4.00" in redeemed.text
        again = member.post("/console/billing/redeem", {"code": code})
        assert again.status_code == 409
        assert "$4.00" in again.text
    finally:
        member.close()


def test_every_operator_page(console: Console) -> None:
    admin = console.admin
    account = console.account("Operator pages", "1")
    assert "Operator pages" in admin.page("/console/accounts?q=Operator")
    assert "No accounts match" in admin.page("/console/accounts?q=nothing-like-this")
    detail = admin.page(f"/console/accounts/{account}")
    assert "Top up" in detail
    assert "$1.00" in detail
    key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', detail)
    assert key
    form = {"amount_usd": "2.5", "note": "invoice 7", "idempotency_key": key.group(1)}
    for _ in range(2):  # a double submit adds once
        topped = admin.post(f"/console/accounts/{account}/credits", form)
        assert topped.status_code == 200
        assert "$3.50" in topped.text
    suspended = admin.post(f"/console/accounts/{account}/status", {"status": "suspended"})
    assert "Resume" in suspended.text
    resumed = admin.post(f"/console/accounts/{account}/status", {"status": "active"})
    assert "Suspend" in resumed.text
    for page in ("overview", "keys", "usage", "requests", "billing"):
        assert "Operator pages" in admin.page(f"/console/{page}?account={account}")
    assert "invoice 7" in admin.page(f"/console/billing?account={account}")
    exported = admin.post("/console/codes", {"count": "3", "amount_usd": "1", "format": "csv"})
    assert exported.status_code == 201
    assert "attachment" in exported.headers["content-disposition"]
    assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 3
    assert "$1.00" in admin.page("/console/codes")
    assert MODEL in admin.page("/console/models")
    assert "0.4" in admin.page("/console/models")
    assert "fake-openai" in admin.page("/console/upstreams")
    table = admin.page("/console/upstreams/table")
    assert "<html" not in table
    assert "healthy" in table
    made = admin.post("/console/tokens", {"name": "deploy"})
    assert made.status_code == 201
    token = re.search(r'id="new-token">(rga-[^<]+)<', made.text)
    assert token
    assert token.group(1) not in admin.page("/console/tokens")
    token_id = re.search(r"(atk_[0-9a-f]+)", admin.page("/console/tokens"))
    assert token_id
    admin.post(f"/console/tokens/{token_id.group(1)}/revoke")
    assert "admin_token.revoke" in admin.page("/console/audit")
    assert "account.update" in admin.page("/console/audit")


def test_errors_are_pages_and_bad_forms_change_nothing(console: Console) -> None:
    admin = console.admin
    missing = admin.get("/console/accounts/acct_nope")
    assert missing.status_code == 404
    assert "Something went wrong" in missing.text
    assert admin.get("/console/no-such-page").status_code == 404
    wrong = admin.client.put("/console/accounts")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST"
    before = admin.page("/console/accounts")
    bad = admin.post("/console/accounts", {"name": "", "credits_usd": "1"})
    assert bad.status_code == 400
    bad = admin.post("/console/accounts", {"name": "x", "credits_usd": "one dollar"})
    assert bad.status_code == 400
    assert "credits_usd" in bad.text
    assert admin.page("/console/accounts").count("<tr>") == before.count("<tr>")


def test_a_stranger_is_sent_to_sign_in(console: Console) -> None:
    stranger = User(console.gateway)
    try:
        for path in ("/console/overview", "/console/accounts", "/console/requests?x=1"):
            response = stranger.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/console/sign-in?next=")
        assert stranger.client.get("/console/overview",
                                   headers={"hx-request": "true"}).headers["hx-redirect"]
        page = stranger.page("/console/sign-in")
        assert 'name="password"' in page
        failed = stranger.post("/console/sign-in", {"email": "a@example.com",
                                                     "password": "wrong-password-1"}, csrf=False)
        assert failed.status_code == 401
        assert "Wrong email or password" in failed.text
        tricked = stranger.post("/console/sign-in?next=//evil.example/x",
                                {"email": "operator@example.com",
                                 "password": "correct-horse-battery-staple"}, csrf=False)
        assert tricked.headers["location"] == "/console/"
    finally:
        stranger.close()


def test_sign_out_ends_the_session(console: Console) -> None:
    account = console.account("Sign out")
    member = console.member(account, "signout@example.com")
    try:
        cookie = dict(member.client.cookies)
        out = member.post("/console/sign-out")
        assert out.status_code == 303
        again = httpx_get(console, "/console/overview", cookie)
        assert again.status_code == 303
        assert "sign-in" in again.headers["location"]
    finally:
        member.close()


def httpx_get(console: Console, path: str, cookies: dict[str, str]) -> object:
    import httpx

    with httpx.Client(base_url=console.gateway.url, cookies=cookies) as client:
        return client.get(path)
