"""The admin API's operations: each decodes its call, asks the business layer
(:mod:`relaygate.accounts`) and shapes the answer. No SQL here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from relaygate.accounts import accounts, audit, codes, credits, keys, usage
from relaygate.accounts.accounts import usd_micros
from relaygate.admin import pages
from relaygate.admin.routes import Call, Reply, announce
from relaygate.admin.schemas import (
    AccountCreate,
    AccountList,
    AuditList,
    CodesCreate,
    CreatedCodes,
    CreditsAdd,
    KeyCreate,
    KeyList,
    Redeem,
    RedemptionCodeList,
    ReportList,
    account_view,
    audit_view,
    code_created_view,
    code_view,
    given,
    grant_view,
    key_created_view,
    key_view,
    unix_seconds,
)
from relaygate.errors import InvalidRequest, NotFound
from relaygate.store.records import AccountRecord, KeyRecord


def _next(rows: list[Any], more: bool) -> str | None:
    return pages.encode([rows[-1].created_at, rows[-1].id]) if more and rows else None


def _q(call: Call) -> str | None:
    return call.query.get("q") or None


# --- accounts --------------------------------------------------------------------------------


async def create_account(call: Call) -> Reply:
    body: AccountCreate = call.body
    micros = 0 if body.credits_usd is None else usd_micros(body.credits_usd, "credits_usd")
    account = await accounts.create_account(
        call.gw.store, call.principal, name=body.name, credits_micros=micros
    )
    await announce(call.gw, account.id)
    return Reply(account_view(account), 201)


async def list_accounts(call: Call) -> Reply:
    rows, more = await accounts.list_accounts(
        call.gw.store,
        call.principal,
        q=_q(call),
        after=pages.decode_page(call.query.get("cursor")),
        limit=call.limit(),
    )
    data = [account_view(a) for a in rows]
    return Reply(AccountList(data=data, has_more=more, next_cursor=_next(rows, more)))


async def get_account(call: Call) -> Reply:
    account = await accounts.get_account(call.gw.store, call.principal, call.params["id"])
    return Reply(account_view(account))


_ACCOUNT_COLUMNS = {"concurrency": "max_concurrency", "low_balance_usd": "low_balance_micros"}


async def patch_account(call: Call) -> Reply:
    changes = given(call.body)
    if changes.get("low_balance_usd") is not None:
        changes["low_balance_usd"] = usd_micros(changes["low_balance_usd"], "low_balance_usd")
    columns = {_ACCOUNT_COLUMNS.get(k, k): v for k, v in changes.items()}
    account: AccountRecord = await accounts.update_account(
        call.gw.store, call.principal, call.params["id"], columns
    )
    await announce(call.gw, account.id)
    return Reply(account_view(account))


async def add_credits(call: Call) -> Reply:
    body: CreditsAdd = call.body
    micros = usd_micros(body.amount_usd, "amount_usd", negative=True, zero=False)
    grant, replayed = await credits.add_credits(
        call.gw.store,
        call.principal,
        call.params["id"],
        micros,
        note=body.note,
        idempotency_key=call.header(b"idempotency-key"),
    )
    if not replayed:
        await announce(call.gw, grant.account_id)
    headers = [(b"idempotent-replayed", b"true")] if replayed else []
    return Reply(grant_view(grant), 201, headers)


# --- keys ------------------------------------------------------------------------------------


def _key_columns(changes: dict[str, Any]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "concurrency":
            columns["max_concurrency"] = value
        elif name == "spend_limit_usd":
            columns["spend_limit_micros"] = (
                None if value is None else usd_micros(value, "spend_limit_usd")
            )
        elif name == "expires_at":
            columns["expires_at"] = None if value is None else unix_seconds(value)
        else:
            columns[name] = value
    return columns


def _models(call: Call) -> set[str]:
    return set(call.gw.settings.models)


async def create_key(call: Call) -> Reply:
    body: KeyCreate = call.body
    fields = _key_columns({k: v for k, v in given(body).items() if v is not None})
    record, raw = await keys.create_key(
        call.gw.store,
        call.principal,
        call.params["id"],
        fields,
        known_models=_models(call),
        max_keys=call.gw.settings.max_keys_per_account,
    )
    await announce(call.gw, record.id)
    return Reply(key_created_view(record, raw), 201)


async def list_keys(call: Call) -> Reply:
    rows, more = await keys.list_keys(
        call.gw.store,
        call.principal,
        call.params["id"],
        after=pages.decode_page(call.query.get("cursor")),
        limit=call.limit(),
    )
    data = [key_view(k) for k in rows]
    return Reply(KeyList(data=data, has_more=more, next_cursor=_next(rows, more)))


async def get_key(call: Call) -> Reply:
    return Reply(key_view(await keys.get_key(call.gw.store, call.principal, call.params["id"])))


async def patch_key(call: Call) -> Reply:
    record: KeyRecord = await keys.update_key(
        call.gw.store,
        call.principal,
        call.params["id"],
        _key_columns(given(call.body)),
        known_models=_models(call),
    )
    await announce(call.gw, record.id)
    return Reply(key_view(record))


async def delete_key(call: Call) -> Reply:
    record = await keys.revoke_key(call.gw.store, call.principal, call.params["id"])
    await announce(call.gw, record.id)
    return Reply(key_view(record))


# --- redemption codes ------------------------------------------------------------------------


async def create_codes(call: Call) -> Reply:
    body: CodesCreate = call.body
    made = await codes.create_codes(
        call.gw.store,
        call.principal,
        count=body.count,
        amount_micros=usd_micros(body.amount_usd, "amount_usd", zero=False),
        expires_at=None if body.expires_at is None else unix_seconds(body.expires_at),
    )
    return Reply(CreatedCodes(data=[code_created_view(c, raw) for c, raw in made]), 201)


async def list_codes(call: Call) -> Reply:
    rows, more = await codes.list_codes(
        call.gw.store,
        call.principal,
        after=pages.decode_page(call.query.get("cursor")),
        limit=call.limit(),
    )
    data = [code_view(c) for c in rows]
    return Reply(RedemptionCodeList(data=data, has_more=more, next_cursor=_next(rows, more)))


async def redeem(call: Call) -> Reply:
    body: Redeem = call.body
    grant = await codes.redeem(call.gw.store, call.principal, call.params["id"], body.code)
    await announce(call.gw, grant.account_id)
    return Reply(grant_view(grant))


# --- audit -----------------------------------------------------------------------------------


async def read_audit(call: Call) -> Reply:
    rows, more = await audit.read(
        call.gw.store,
        call.principal,
        before=pages.decode_before(call.query.get("cursor")),
        limit=call.limit(),
    )
    cursor = pages.encode([rows[-1].id]) if more and rows else None
    return Reply(AuditList(data=[audit_view(e) for e in rows], has_more=more, next_cursor=cursor))


# --- usage and the request log (accounts/usage.py: read from the rollups) --------------------


def _millis(call: Call, name: str) -> int | None:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.isascii() and raw.isdigit() and len(raw) <= 12:
        return int(raw) * 1000
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be RFC 3339 or unix seconds", param=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _scope_filters(call: Call) -> dict[str, Any]:
    """The filters every report shares; a member's are held to its own account."""
    account = call.query.get("account") or None
    if call.principal.role != "admin":
        if account is not None and account != call.principal.account_id:
            raise NotFound("No account with that id")
        account = call.principal.account_id
    return {
        "account_id": account,
        "key_id": call.query.get("key") or None,
        "model": call.query.get("model") or None,
        "start_ms": _millis(call, "from"),
        "end_ms": _millis(call, "to"),
    }


async def usage_report(call: Call) -> Reply:
    group_by = call.query.get("group_by", "day")
    if group_by not in ("hour", "day", "model", "key"):
        raise InvalidRequest("group_by must be hour, day, model or key", param="group_by")
    rows = await usage.usage_report(call.gw.store, group_by=group_by, **_scope_filters(call))
    return Reply(ReportList(data=rows))


async def request_log(call: Call) -> Reply:
    rows, cursor = await usage.request_log(
        call.gw.store,
        status=call.query.get("status") or None,
        limit=call.limit(),
        cursor=call.query.get("cursor") or None,
        **_scope_filters(call),
    )
    return Reply(ReportList(data=rows, next_cursor=cursor))
