"""The admin API's route table (``/admin/v1``): every operation, its types and its handler."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from relaygate.admin import handlers as h
from relaygate.admin import schemas as s
from relaygate.admin import signin
from relaygate.admin.openapi import document
from relaygate.admin.routes import Call, Reply, Route, Router

_PAGE = ("limit", "cursor")
_REPORT = ("account", "key", "model", "from", "to")


class OpenApiDocument(msgspec.Struct):
    """The OpenAPI 3.1 document itself (free-form)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


async def openapi(call: Call) -> Reply:
    return Reply(_document())


ROUTES: list[Route] = [
    Route("POST", "/accounts", h.create_account, "Create an account", s.Account,
          s.AccountCreate, status=201),
    Route("GET", "/accounts", h.list_accounts, "List accounts (newest first; q searches name"
          " and id)", s.AccountList, query=("q", *_PAGE)),
    Route("GET", "/accounts/{id}", h.get_account, "Get an account", s.Account),
    Route("PATCH", "/accounts/{id}", h.patch_account, "Change an account", s.Account,
          s.AccountPatch),
    Route("POST", "/accounts/{id}/credits", h.add_credits, "Grant credits (negative: take"
          " back, never below what is used)", s.CreditGrant, s.CreditsAdd, status=201,
          headers=("Idempotency-Key",)),
    Route("POST", "/accounts/{id}/keys", h.create_key, "Create a key (shown once)",
          s.KeyCreated, s.KeyCreate, status=201),
    Route("GET", "/accounts/{id}/keys", h.list_keys, "List an account's keys", s.KeyList,
          query=_PAGE),
    Route("POST", "/accounts/{id}/redeem", h.redeem, "Redeem a code into the account",
          s.CreditGrant, s.Redeem),
    Route("GET", "/keys/{id}", h.get_key, "Get a key", s.Key),
    Route("PATCH", "/keys/{id}", h.patch_key, "Change a key", s.Key, s.KeyPatch),
    Route("DELETE", "/keys/{id}", h.delete_key, "Revoke a key", s.Key),
    Route("POST", "/redemption-codes", h.create_codes, "Create redemption codes (shown once)",
          s.CreatedCodes, s.CodesCreate, status=201),
    Route("GET", "/redemption-codes", h.list_codes, "List redemption codes",
          s.RedemptionCodeList, query=_PAGE),
    Route("GET", "/audit", h.read_audit, "Read the audit log (newest first)", s.AuditList,
          query=_PAGE),
    Route("GET", "/usage", h.usage_report, "Usage by hour, day, model or key", s.ReportList,
          query=(*_REPORT, "group_by")),
    Route("GET", "/requests", h.request_log, "The request log, each row's cost broken down",
          s.ReportList, query=(*_REPORT, "status", *_PAGE)),
    Route("POST", "/session", signin.sign_in, "Sign in (sets the session cookie; the answer"
          " carries the CSRF token)", signin.Session, signin.SignIn, status=201, public=True),
    Route("GET", "/session", signin.current, "The signed-in user and the CSRF token",
          signin.Session),
    Route("DELETE", "/session", signin.sign_out, "Sign out", signin.SignedOut),
    Route("GET", "/openapi.json", openapi, "This document", OpenApiDocument, public=True),
]  # fmt: skip

ROUTER = Router(ROUTES)


@cache
def _document() -> OpenApiDocument:
    return msgspec.convert(document(ROUTES), OpenApiDocument)
