"""The admin API's bodies: what requests send and responses return, as msgspec types.

The same types decode and validate the requests, encode the responses, and generate the
OpenAPI document. Money is a decimal string of USD with six places in every response
(``"12.500000"``); requests may send it as a string or a JSON number, converted exactly to
integer micro-USD. Times are RFC 3339 (UTC) in responses; requests may send RFC 3339 or unix
seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from relaygate.accounts.accounts import MAX_NAME, usd
from relaygate.accounts.codes import MAX_CODE_CHARS, MAX_CODES
from relaygate.accounts.credits import MAX_NOTE
from relaygate.accounts.keys import MAX_MODELS
from relaygate.errors import InvalidRequest
from relaygate.store.admin_sql import AuditEntry, CodeRecord, GrantRecord
from relaygate.store.records import AccountRecord, KeyRecord

Name = Annotated[str, Meta(max_length=MAX_NAME, description="At most 200 characters.")]
Usd = Annotated[
    Decimal,
    Meta(description="USD as a decimal string or a JSON number, at most 6 decimal places."),
]
Limit = Annotated[int, Meta(ge=1, le=10**9)]
MAX_UNIX_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z: the last moment a date-time can name."""
Moment = Annotated[
    datetime | Annotated[int, Meta(ge=0, le=MAX_UNIX_SECONDS)],
    Meta(description="RFC 3339 date-time (UTC if no offset) or unix seconds."),
]
Model = Annotated[str, Meta(max_length=MAX_NAME)]
Period = Literal["total", "day", "week", "month"]
Status = Literal["active", "suspended"]


class _Body(Struct, forbid_unknown_fields=True, kw_only=True):
    """A request body: unknown fields are an error (a typo must not pass silently)."""


class AccountCreate(_Body):
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
    credits_usd: Usd | None = None


class AccountPatch(_Body):
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME)] | UnsetType = UNSET
    status: Status | UnsetType = UNSET
    rpm: Limit | UnsetType | None = UNSET
    tpm: Limit | UnsetType | None = UNSET
    concurrency: Limit | UnsetType | None = UNSET
    low_balance_usd: Usd | UnsetType | None = UNSET


class CreditsAdd(_Body):
    amount_usd: Usd
    note: Annotated[str, Meta(max_length=MAX_NOTE)] | None = None


class KeyCreate(_Body):
    name: Name = ""
    models: Annotated[list[Model], Meta(max_length=MAX_MODELS)] | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrency: Limit | None = None
    expires_at: Moment | None = None
    spend_limit_usd: Usd | None = None
    spend_limit_period: Period | None = None


class KeyPatch(_Body):
    name: Name | UnsetType = UNSET
    models: Annotated[list[Model], Meta(max_length=MAX_MODELS)] | UnsetType | None = UNSET
    rpm: Limit | UnsetType | None = UNSET
    tpm: Limit | UnsetType | None = UNSET
    concurrency: Limit | UnsetType | None = UNSET
    expires_at: Moment | UnsetType | None = UNSET
    spend_limit_usd: Usd | UnsetType | None = UNSET
    spend_limit_period: Period | UnsetType | None = UNSET


class CodesCreate(_Body):
    count: Annotated[int, Meta(ge=1, le=MAX_CODES)]
    amount_usd: Usd
    expires_at: Moment | None = None


class Redeem(_Body):
    code: Annotated[str, Meta(min_length=1, max_length=MAX_CODE_CHARS)]


# --- responses -------------------------------------------------------------------------------


class Account(Struct, kw_only=True):
    object: Literal["account"] = "account"
    id: str
    name: str
    status: str
    created_at: datetime
    balance_usd: str | None
    """What the account's keys can still spend (``null``: unlimited)."""
    granted_usd: str
    used_usd: str
    unlimited: bool
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    low_balance_usd: str | None


class Key(Struct, kw_only=True):
    object: Literal["key"] = "key"
    id: str
    account_id: str
    name: str
    prefix: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    spend_limit_usd: str | None
    spend_limit_period: str | None
    used_usd: str
    """What the key has spent over its lifetime."""


class KeyCreated(Key, kw_only=True):
    key: str
    """The key itself: shown this once, stored only as a hash."""


class CreditGrant(Struct, kw_only=True):
    object: Literal["credit_grant"] = "credit_grant"
    id: str
    account_id: str
    amount_usd: str
    note: str | None
    source: str
    created_at: datetime
    granted_usd: str
    """The account's granted credits right after this grant."""
    used_usd: str
    balance_usd: str


class RedemptionCode(Struct, kw_only=True):
    object: Literal["redemption_code"] = "redemption_code"
    id: str
    prefix: str
    amount_usd: str
    created_at: datetime
    expires_at: datetime | None
    redeemed_at: datetime | None
    account_id: str | None


class RedemptionCodeCreated(RedemptionCode, kw_only=True):
    code: str
    """The code itself: shown this once, stored only as a hash."""


class AuditEvent(Struct, kw_only=True):
    object: Literal["audit_entry"] = "audit_entry"
    id: int
    at: datetime
    actor: str
    address: str | None
    action: str
    target_type: str
    target_id: str
    account_id: str | None
    detail: dict[str, Any]


class AccountList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Account]
    has_more: bool
    next_cursor: str | None
    """Pass as ``cursor`` for the next page (``null``: this is the last)."""


class KeyList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Key]
    has_more: bool
    next_cursor: str | None


class RedemptionCodeList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[RedemptionCode]
    has_more: bool
    next_cursor: str | None


class CreatedCodes(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[RedemptionCodeCreated]


class AuditList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[AuditEvent]
    has_more: bool
    next_cursor: str | None


class ReportList(Struct, kw_only=True):
    """Usage groups or ledger rows (``/usage``, ``/requests``)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    next_cursor: str | None = None


class ErrorDetail(Struct, kw_only=True, omit_defaults=True):
    code: int
    message: str
    type: str
    param: str | None = None


class Error(Struct):
    """The contract's error shape."""

    error: ErrorDetail


# --- views -----------------------------------------------------------------------------------


def moment(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _usd(micros: int) -> str:
    return usd(micros) or "0"


def account_view(a: AccountRecord) -> Account:
    return Account(
        id=a.id,
        name=a.name,
        status=a.status,
        created_at=_at(a.created_at),
        balance_usd=None if a.unlimited else _usd(max(0, a.granted_micros - a.used_micros)),
        granted_usd=_usd(a.granted_micros),
        used_usd=_usd(a.used_micros),
        unlimited=a.unlimited,
        rpm=a.rpm,
        tpm=a.tpm,
        concurrency=a.max_concurrency,
        low_balance_usd=usd(a.low_balance_micros),
    )


def _key_fields(k: KeyRecord) -> dict[str, Any]:
    return {
        "id": k.id,
        "account_id": k.account_id,
        "name": k.name,
        "prefix": k.prefix,
        "models": list(k.models) if k.models is not None else None,
        "rpm": k.rpm,
        "tpm": k.tpm,
        "concurrency": k.max_concurrency,
        "created_at": _at(k.created_at),
        "expires_at": moment(k.expires_at),
        "revoked_at": moment(k.revoked_at),
        "spend_limit_usd": usd(k.spend_limit_micros),
        "spend_limit_period": k.spend_limit_period,
        "used_usd": _usd(k.used_micros),
    }


def key_view(k: KeyRecord) -> Key:
    return Key(**_key_fields(k))


def key_created_view(k: KeyRecord, raw: str) -> KeyCreated:
    return KeyCreated(**_key_fields(k), key=raw)


def grant_view(g: GrantRecord) -> CreditGrant:
    return CreditGrant(
        id=g.id,
        account_id=g.account_id,
        amount_usd=_usd(g.amount_micros),
        note=g.note,
        source=g.source,
        created_at=_at(g.created_at),
        granted_usd=_usd(g.granted_after),
        used_usd=_usd(g.used_after),
        balance_usd=_usd(max(0, g.granted_after - g.used_after)),
    )


def _code_fields(c: CodeRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "prefix": c.prefix,
        "amount_usd": _usd(c.amount_micros),
        "created_at": _at(c.created_at),
        "expires_at": moment(c.expires_at),
        "redeemed_at": moment(c.redeemed_at),
        "account_id": c.account_id,
    }


def code_view(c: CodeRecord) -> RedemptionCode:
    return RedemptionCode(**_code_fields(c))


def code_created_view(c: CodeRecord, raw: str) -> RedemptionCodeCreated:
    return RedemptionCodeCreated(**_code_fields(c), code=raw)


def audit_view(e: AuditEntry) -> AuditEvent:
    return AuditEvent(
        id=e.id,
        at=datetime.fromtimestamp(e.at / 1000, UTC),
        actor=e.actor,
        address=e.address,
        action=e.action,
        target_type=e.target_type,
        target_id=e.target_id,
        account_id=e.account_id,
        detail=e.detail or {},
    )


def unix_seconds(value: datetime | int) -> int:
    """A request's time as unix seconds (a date-time without an offset is UTC)."""
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = int(value.timestamp())
    if not 0 <= seconds <= MAX_UNIX_SECONDS:
        raise InvalidRequest("A time must lie between 1970 and 9999 (UTC)")
    return seconds


def given(struct: Struct) -> dict[str, Any]:
    """The fields a PATCH body set (``null`` included, absent ones left out)."""
    return {
        name: getattr(struct, name)
        for name in struct.__struct_fields__
        if getattr(struct, name) is not UNSET
    }


encoder = msgspec.json.Encoder(decimal_format="string")
