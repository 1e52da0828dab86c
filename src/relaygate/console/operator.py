"""The operator's pages (an admin): accounts, redemption codes, models and prices, upstream
health, admin tokens and the audit log. Each asks :mod:`relaygate.accounts` (or the catalog)
for its data."""

from __future__ import annotations

import csv
import io
import secrets
from typing import Any

from relaygate.accounts import accounts, audit, codes, credits, keys, tokens, usage, users
from relaygate.admin import pages
from relaygate.admin.routes import announce
from relaygate.console import charts, forms
from relaygate.console.customer import balance
from relaygate.console.render import render
from relaygate.console.web import PREFIX, Page, Request, query_args, redirect
from relaygate.errors import ApiError, InvalidRequest

ACCOUNTS_PAGE = 50
AUDIT_PAGE = 100


async def accounts_page(request: Request, status: int = 200, error: str | None = None) -> Page:
    q = request.query.get("q", "").strip() or None
    rows, more = await accounts.list_accounts(
        request.gw.store, request.user, q=q,
        after=pages.decode_page(request.query.get("cursor")), limit=ACCOUNTS_PAGE,
    )  # fmt: skip
    cursor = pages.encode([rows[-1].created_at, rows[-1].id]) if more and rows else None
    return render(
        request, "accounts.html", status, accounts=rows, q=q or "", error=error,
        balances={a.id: balance(a) for a in rows},
        next_link=query_args(q=q, cursor=cursor) if cursor else None,
    )  # fmt: skip


async def accounts_list(request: Request) -> Page:
    return await accounts_page(request)


async def create_account(request: Request) -> Page:
    try:
        micros = forms.usd(request, "credits_usd") or 0
        account = await accounts.create_account(
            request.gw.store, request.user, name=request.form.get("name", ""),
            credits_micros=micros,
        )  # fmt: skip
    except ApiError as exc:
        return await accounts_page(request, exc.status, str(exc))
    await announce(request.gw, account.id)
    return redirect(f"{PREFIX}/accounts/{account.id}")


async def account_page(request: Request, status: int = 200, **extra: Any) -> Page:
    store, principal = request.gw.store, request.user
    account = await accounts.get_account(store, principal, request.params["id"])
    rows, more = await keys.list_keys(store, principal, account.id, after=None, limit=100)
    members = await users.list_users(store, account_id=account.id, limit=100)
    month = await usage.usage_report(
        store, account_id=account.id, start_ms=charts.month_start(), group_by="model"
    )
    values: dict[str, Any] = {"error": None, "notice": None, **extra}
    return render(
        request, "account.html", status, account=account, balance=balance(account),
        keys=rows, more_keys=more, members=members, by_model=month,
        month_cost=sum(int(v["cost_micros"]) for v in month),
        idempotency_key=secrets.token_hex(16), **values,
    )  # fmt: skip


async def account_detail(request: Request) -> Page:
    return await account_page(request)


async def top_up(request: Request) -> Page:
    try:
        micros = forms.usd(request, "amount_usd", negative=True, zero=False)
        if micros is None:
            raise InvalidRequest("amount_usd: enter an amount", param="amount_usd")
        grant, replayed = await credits.add_credits(
            request.gw.store, request.user, request.params["id"], micros,
            note=request.field("note") or None,
            idempotency_key=request.field("idempotency_key") or None,
        )  # fmt: skip
    except ApiError as exc:
        return await account_page(request, exc.status, error=str(exc))
    if not replayed:
        await announce(request.gw, grant.account_id)
    return await account_page(request, notice="topped_up")


async def set_status(request: Request) -> Page:
    wanted = request.field("status")
    try:
        account = await accounts.update_account(
            request.gw.store, request.user, request.params["id"], {"status": wanted}
        )
    except ApiError as exc:
        return await account_page(request, exc.status, error=str(exc))
    await announce(request.gw, account.id)
    return await account_page(request, notice=account.status)


async def add_member(request: Request) -> Page:
    store, settings = request.gw.store, request.gw.settings
    account = await accounts.get_account(store, request.user, request.params["id"])
    try:
        user = await users.create_user(
            store, request.field("email"), request.form.get("password", ""), "member",
            account.id, settings=settings,
        )  # fmt: skip
    except ApiError as exc:
        return await account_page(request, exc.status, error=str(exc))
    await audit.record(
        store, request.user, "user.create", "user", user.id,
        {"role": "member", "email": user.email}, account_id=account.id,
    )  # fmt: skip
    return await account_page(request, notice="member_added")


async def codes_page(request: Request, status: int = 200, **extra: Any) -> Page:
    rows, more = await codes.list_codes(
        request.gw.store, request.user,
        after=pages.decode_page(request.query.get("cursor")), limit=100,
    )  # fmt: skip
    cursor = pages.encode([rows[-1].created_at, rows[-1].id]) if more and rows else None
    values: dict[str, Any] = {"made": None, "error": None, **extra}
    return render(
        request, "codes.html", status, codes=rows,
        next_link=query_args(cursor=cursor) if cursor else None, **values,
    )  # fmt: skip


async def codes_list(request: Request) -> Page:
    return await codes_page(request)


async def create_codes(request: Request) -> Page:
    try:
        count = forms.whole(request, "count", high=1000)
        amount = forms.usd(request, "amount_usd", zero=False)
        if count is None or amount is None:
            raise InvalidRequest("Enter how many codes and their amount", param="count")
        made = await codes.create_codes(
            request.gw.store, request.user, count=count, amount_micros=amount
        )
    except ApiError as exc:
        return await codes_page(request, exc.status, error=str(exc))
    if request.field("format") == "csv":
        return _codes_csv(made)
    return await codes_page(request, 201, made=made)


def _codes_csv(made: list[tuple[Any, str]]) -> Page:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("code", "id", "amount_micros", "created_at", "expires_at"))
    for record, raw in made:
        writer.writerow((raw, record.id, record.amount_micros, record.created_at,
                         record.expires_at or ""))  # fmt: skip
    disposition = b'attachment; filename="relaygate-codes.csv"'
    return Page(out.getvalue().encode(), 201, b"text/csv; charset=utf-8",
                [(b"content-disposition", disposition)])  # fmt: skip


async def models_page(request: Request) -> Page:
    return render(request, "models.html", models=request.gw.settings.models)


def _health(request: Request) -> list[tuple[str, list[dict[str, Any]]]]:
    catalog = request.gw.catalog
    return [(name, [h.snapshot() for h in model.health]) for name, model in catalog.models.items()]


async def upstreams_page(request: Request) -> Page:
    return render(request, "upstreams.html", health=_health(request))


async def upstreams_table(request: Request) -> Page:
    """The table alone: the page polls it (htmx) to stay live."""
    return render(request, "upstreams_table.html", health=_health(request))


async def tokens_page(request: Request, status: int = 200, **extra: Any) -> Page:
    rows = await tokens.list_admin_tokens(request.gw.store, request.user)
    values: dict[str, Any] = {"created": None, "error": None, **extra}
    return render(request, "tokens.html", status, tokens=rows, **values)


async def tokens_list(request: Request) -> Page:
    return await tokens_page(request)


async def create_token(request: Request) -> Page:
    try:
        record, raw = await tokens.create_admin_token(
            request.gw.store, request.user, request.field("name")
        )
    except ApiError as exc:
        return await tokens_page(request, exc.status, error=str(exc))
    return await tokens_page(request, 201, created={"token": raw, "record": record})


async def revoke_token(request: Request) -> Page:
    await tokens.revoke_admin_token(request.gw.store, request.user, request.params["id"])
    return await tokens_page(request)


async def audit_page(request: Request) -> Page:
    rows, more = await audit.read(
        request.gw.store, request.user,
        before=pages.decode_before(request.query.get("cursor")), limit=AUDIT_PAGE,
    )  # fmt: skip
    cursor = pages.encode([rows[-1].id]) if more and rows else None
    return render(
        request, "audit.html", entries=rows,
        next_link=query_args(cursor=cursor) if cursor else None,
    )  # fmt: skip
