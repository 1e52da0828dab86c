"""The admin API through a real gateway process: every route, its JSON shapes, its errors."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from relaygate.admin import ROUTES
from relaygate.admin.openapi import document
from tests.admin.conftest import Admin
from tests.support.gateway import http


def _account(admin: Admin, name: str = "Acme", credits: str | None = "10") -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if credits is not None:
        body["credits_usd"] = credits
    created: dict[str, Any] = admin.ok("POST", "/accounts", body, status=201)
    return created


def test_openapi_document_lists_every_route(admin: Admin) -> None:
    served = admin.ok("GET", "/openapi.json", token=None)
    assert served == json.loads(json.dumps(document(ROUTES)))
    assert served["openapi"] == "3.1.0"
    for route in ROUTES:
        operation = served["paths"]["/admin/v1" + route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in served["components"]["schemas"]
    methods = {(p, m) for p, ops in served["paths"].items() for m in ops}
    assert methods == {("/admin/v1" + r.path, r.method.lower()) for r in ROUTES}


def test_accounts_create_get_list_patch(admin: Admin) -> None:
    created = _account(admin, "Paging Co 1", "12.5")
    assert created["object"] == "account"
    assert created["id"].startswith("acct_")
    assert (created["balance_usd"], created["granted_usd"], created["used_usd"]) == (
        "12.500000", "12.500000", "0.000000")
    assert admin.ok("GET", f"/accounts/{created['id']}") == created
    for n in range(2, 5):
        _account(admin, f"Paging Co {n}", None)
    seen: list[str] = []
    cursor = ""
    while True:
        page = admin.ok("GET", f"/accounts?q=paging+co&limit=2{cursor}")
        seen += [a["name"] for a in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = "&cursor=" + page["next_cursor"]
    assert sorted(seen) == [f"Paging Co {n}" for n in range(1, 5)]
    changed = admin.ok("PATCH", f"/accounts/{created['id']}",
                       {"status": "suspended", "rpm": 60, "low_balance_usd": 1.5})
    assert (changed["status"], changed["rpm"], changed["low_balance_usd"]) == (
        "suspended", 60, "1.500000")
    assert changed["name"] == "Paging Co 1"
    cleared = admin.ok("PATCH", f"/accounts/{created['id']}", {"rpm": None})
    assert cleared["rpm"] is None


def test_keys_create_use_patch_revoke(admin: Admin) -> None:
    account = _account(admin)
    created = admin.ok("POST", f"/accounts/{account['id']}/keys",
                       {"name": "ci", "models": ["relaygate-simulator"], "rpm": 100,
                        "expires_at": "2099-01-01T00:00:00Z", "spend_limit_usd": "2",
                        "spend_limit_period": "month"}, status=201)
    assert created["key"].startswith("sk-")
    assert created["account_id"] == account["id"]
    assert (created["spend_limit_usd"], created["spend_limit_period"]) == ("2.000000", "month")
    assert created["expires_at"] == "2099-01-01T00:00:00Z"
    # the gateway that made it knows it at once
    status, _, raw = http("GET", admin.gateway.url + "/v1/models", key=created["key"])
    assert status == 200, raw
    assert [m["id"] for m in json.loads(raw)["data"]] == ["relaygate-simulator"]
    listed = admin.ok("GET", f"/accounts/{account['id']}/keys")
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert "key" not in listed["data"][0]
    changed = admin.ok("PATCH", f"/keys/{created['id']}", {"models": None, "name": "ci-2"})
    assert (changed["models"], changed["name"], changed["rpm"]) == (None, "ci-2", 100)
    assert admin.ok("GET", f"/keys/{created['id']}") == changed
    revoked = admin.ok("DELETE", f"/keys/{created['id']}")
    assert revoked["revoked_at"] is not None
    status, _, raw = http("GET", admin.gateway.url + "/v1/models", key=created["key"])
    assert status == 401, raw


def test_credits_with_an_idempotency_key_add_once(admin: Admin) -> None:
    account = _account(admin, credits=None)
    path = f"/accounts/{account['id']}/credits"

    def send(_: int) -> tuple[int, dict[str, str], Any]:
        return admin.call("POST", path, {"amount_usd": "2.5", "note": "invoice 7"},
                          headers={"Idempotency-Key": "invoice-7"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))
    assert {status for status, _, _ in answers} == {201}
    bodies = {json.dumps(body, sort_keys=True) for _, _, body in answers}
    assert len(bodies) == 1
    replays = [h.get("idempotent-replayed") or h.get("Idempotent-Replayed") for _, h, _ in answers]
    assert replays.count("true") == 19
    grant = answers[0][2]
    assert (grant["object"], grant["amount_usd"], grant["balance_usd"], grant["note"]) == (
        "credit_grant", "2.500000", "2.500000", "invoice 7")
    assert admin.ok("GET", f"/accounts/{account['id']}")["granted_usd"] == "2.500000"
    # a JSON number is exact too, and a negative amount adjusts down
    admin.ok("POST", path, {"amount_usd": 0.1}, status=201)
    taken = admin.ok("POST", path, {"amount_usd": -1.6}, status=201)
    assert taken["granted_usd"] == "1.000000"


def test_codes_create_list_and_50_concurrent_redemptions(admin: Admin) -> None:
    accounts = [_account(admin, f"Redeemer {n}", None) for n in range(5)]
    made = admin.ok("POST", "/redemption-codes", {"count": 2, "amount_usd": "3"}, status=201)
    codes = [c["code"] for c in made["data"]]
    assert all(code.startswith("rgc-") for code in codes)
    listed = admin.ok("GET", "/redemption-codes?limit=200")["data"]
    assert {c["id"] for c in made["data"]} <= {c["id"] for c in listed}
    assert not any("code" in c for c in listed)

    def redeem(n: int) -> int:
        status, _, _ = admin.call("POST", f"/accounts/{accounts[n % 5]['id']}/redeem",
                                  {"code": codes[0]})
        return status

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(redeem, range(50)))
    assert sorted(statuses) == [200] + [409] * 49
    granted = sorted(admin.ok("GET", f"/accounts/{a['id']}")["granted_usd"] for a in accounts)
    assert granted == ["0.000000"] * 4 + ["3.000000"]


def test_the_audit_log_reads_back_every_change(admin: Admin) -> None:
    account = _account(admin, "Audited")
    admin.ok("PATCH", f"/accounts/{account['id']}", {"tpm": 1000})
    entries: list[dict[str, Any]] = []
    cursor = ""
    while len(entries) < 2:
        page = admin.ok("GET", f"/audit?limit=1{cursor}")
        entries += page["data"]
        cursor = "&cursor=" + page["next_cursor"]
    update, create = entries
    assert (update["action"], update["target_id"], update["detail"]) == (
        "account.update", account["id"], {"tpm": 1000})
    assert create["action"] == "account.create"
    assert update["actor"].startswith("admin_token:atk_")
    assert update["address"] == "127.0.0.1"
    assert update["at"].endswith("Z")


# --- credentials -----------------------------------------------------------------------------


def test_credentials(admin: Admin) -> None:
    account = _account(admin)
    key = admin.ok("POST", f"/accounts/{account['id']}/keys", {"name": "k"}, status=201)["key"]
    before = admin.state(account["id"])
    for token, needle in [
        (None, "admin token"),
        (key, "API keys are not accepted"),
        ("rga-not-a-token", "Invalid admin token"),
        ("operator-token-for-tests-0123456789", "admin tokens"),
    ]:
        status, _, body = admin.call("POST", f"/accounts/{account['id']}/credits",
                                     {"amount_usd": "1"}, token=token)
        assert status == 401, body
        assert body["error"]["type"] == "authentication_error"
        assert needle in body["error"]["message"]
        assert set(body["error"]) <= {"code", "message", "type", "param", "fallback_suggestion"}
    # an admin token is never an API key
    status, _, raw = http("GET", admin.gateway.url + "/v1/models", key=admin.token)
    assert status == 401, raw
    assert admin.state(account["id"]) == before


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        pytest.param("POST", "/accounts", {"name": "n" * 201}, 400, "name", id="long-name"),
        pytest.param("POST", "/accounts", {"name": "x", "credits_usd": "-1"}, 400,
                     "credits_usd", id="negative-initial-credits"),
        pytest.param("POST", "/accounts", {"name": "x", "plan": "gold"}, 400, None,
                     id="unknown-field"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": "ten"}, 400, "amount_usd",
                     id="non-numeric"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": "NaN"}, 400, "amount_usd",
                     id="nan"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": "1.0000001"}, 400, "amount_usd",
                     id="too-many-decimals"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": 1e30}, 400, "amount_usd",
                     id="absurd"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": "-11"}, 400, "amount_usd",
                     id="below-used"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": 0}, 400, "amount_usd",
                     id="zero"),
        pytest.param("POST", "{acct}/credits", {"amount_usd": True}, 400, "amount_usd",
                     id="boolean"),
        pytest.param("POST", "/accounts/acct_missing/credits", {"amount_usd": "1"}, 404, None,
                     id="unknown-account"),
        pytest.param("PATCH", "{acct}", {"status": "gone"}, 400, "status", id="bad-status"),
        pytest.param("PATCH", "{acct}", {"name": "x" * 201}, 400, "name",
                     id="long-name-patch"),
        pytest.param("POST", "{acct}/keys", {"models": ["gpt-9"]}, 400, "models",
                     id="unknown-model"),
        pytest.param("POST", "{acct}/keys", {"name": "k" * 201}, 400, "name",
                     id="long-key-name"),
        pytest.param("POST", "{acct}/keys", {"rpm": -1}, 400, "rpm", id="negative-rpm"),
        pytest.param("POST", "{acct}/keys", {"expires_at": "yesterday"}, 400, "expires_at",
                     id="bad-date"),
        pytest.param("POST", "{acct}/redeem", {"code": "rgc-nope"}, 404, "code",
                     id="unknown-code"),
        pytest.param("POST", "/redemption-codes", {"count": 5000, "amount_usd": "1"}, 400,
                     "count", id="too-many-codes"),
        pytest.param("POST", "/redemption-codes", {"count": 1, "amount_usd": "-1"}, 400,
                     "amount_usd", id="negative-code"),
        pytest.param("GET", "/accounts?cursor=not-a-cursor", None, 400, "cursor",
                     id="bad-cursor"),
        pytest.param("GET", "/accounts?limit=0", None, 400, "limit", id="bad-limit"),
        pytest.param("PUT", "{acct}", {"name": "x"}, 405, None, id="wrong-method"),
        pytest.param("GET", "/nothing-here", None, 404, None, id="unknown-route"),
    ],
)
def test_bad_input_changes_nothing(
    admin: Admin, method: str, path: str, body: Any, status: int, param: str | None
) -> None:
    account = _account(admin)
    before = admin.state(account["id"])
    got, _, answer = admin.call(method, path.replace("{acct}", f"/accounts/{account['id']}"),
                                body)
    assert got == status, answer
    error = answer["error"]
    assert error["code"] == status
    assert error.get("param") == param
    assert admin.state(account["id"]) == before


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"{not json", 400, id="not-json"),
        pytest.param(b"", 400, id="empty"),
        pytest.param(b"[1, 2]", 400, id="not-an-object"),
        pytest.param(b'{"amount_usd": "' + b"1" * 300_000 + b'"}', 413, id="oversized"),
    ],
)
def test_bad_bodies_change_nothing(admin: Admin, raw: bytes, status: int) -> None:
    account = _account(admin)
    before = admin.state(account["id"])
    got, _, answer = admin.call("POST", f"/accounts/{account['id']}/credits", raw=raw)
    assert got == status, answer
    assert admin.state(account["id"]) == before


def test_a_reused_idempotency_key_changes_nothing(admin: Admin) -> None:
    account = _account(admin)
    path = f"/accounts/{account['id']}/credits"
    admin.ok("POST", path, {"amount_usd": "1"}, status=201, headers={"Idempotency-Key": "k1"})
    before = admin.state(account["id"])
    status, _, answer = admin.call("POST", path, {"amount_usd": "2"},
                                   headers={"Idempotency-Key": "k1"})
    assert status == 409, answer
    assert answer["error"]["param"] == "Idempotency-Key"
    assert admin.state(account["id"]) == before
    assert Decimal(admin.ok("GET", f"/accounts/{account['id']}")["granted_usd"]) == 11


def test_a_suspended_account_gets_no_keys_and_redeems_no_codes(admin: Admin) -> None:
    account = _account(admin)
    (code,) = admin.ok("POST", "/redemption-codes", {"count": 1, "amount_usd": "1"},
                       status=201)["data"]
    admin.ok("PATCH", f"/accounts/{account['id']}", {"status": "suspended"})
    before = admin.state(account["id"])
    for path, body in [("/keys", {"name": "k"}), ("/redeem", {"code": code["code"]})]:
        status, _, answer = admin.call("POST", f"/accounts/{account['id']}{path}", body)
        assert status == 400, answer
        assert "suspended" in answer["error"]["message"]
    assert admin.state(account["id"]) == before
    (listed,) = [c for c in admin.ok("GET", "/redemption-codes?limit=200")["data"]
                 if c["id"] == code["id"]]
    assert listed["redeemed_at"] is None
