"""A customer's pages (a member, or an admin naming ``?account=``): overview, API keys, usage,
the request log and billing. Each asks :mod:`relaygate.accounts` for its data."""

from __future__ import annotations

import csv
import io
from typing import Any

from relaygate.accounts import accounts, codes, credits, keys, usage
from relaygate.admin.routes import announce
from relaygate.console import charts, forms
from relaygate.console.render import render
from relaygate.console.web import Page, Request, query_args
from relaygate.errors import ApiError, InvalidRequest
from relaygate.store.records import AccountRecord

KEYS_SHOWN = 200
LOG_PAGE = 50


def balance(account: AccountRecord) -> int | None:
    """What the account can still spend (``None``: unlimited)."""
    return None if account.unlimited else account.granted_micros - account.used_micros


async def _account(request: Request) -> AccountRecord:
    return await accounts.get_account(request.gw.store, request.user, request.account_id())


def _days(request: Request) -> int:
    raw = request.query.get("days", "30")
    return int(raw) if raw in {str(d) for d in charts.RANGES} else 30


def _with_account(request: Request) -> str:
    """``?account=`` for an admin's links (a member's pages need none)."""
    return request.account_id() if request.user.role == "admin" else ""


async def overview(request: Request) -> Page:
    account = await _account(request)
    store = request.gw.store
    month = await usage.usage_report(
        store, account_id=account.id, start_ms=charts.month_start(), group_by="model"
    )
    series = await charts.daily(store, account_id=account.id, days=30)
    return render(
        request,
        "overview.html",
        account=account,
        balance=balance(account),
        month_cost=sum(int(v["cost_micros"]) for v in month),
        month_requests=sum(int(v["requests"]) for v in month),
        by_model=month,
        chart=series.chart("cost"),
        account_arg=_with_account(request),
    )


async def _keys_page(request: Request, status: int = 200, **extra: Any) -> Page:
    account = await _account(request)
    rows, more = await keys.list_keys(
        request.gw.store, request.user, account.id, after=None, limit=KEYS_SHOWN
    )
    values: dict[str, Any] = {"created": None, "error": None, "notice": None, **extra}
    return render(
        request,
        "keys.html",
        status,
        account=account,
        keys=rows,
        more=more,
        models=sorted(request.gw.settings.models),
        account_arg=_with_account(request),
        **values,
    )


async def keys_page(request: Request) -> Page:
    return await _keys_page(request)


async def create_key(request: Request) -> Page:
    known = set(request.gw.settings.models)
    try:
        fields = {k: v for k, v in forms.key_fields(request, known).items() if v is not None}
        record, raw = await keys.create_key(
            request.gw.store, request.user, request.account_id(), fields, known_models=known
        )
    except ApiError as exc:
        return await _keys_page(request, exc.status, error=str(exc))
    await announce(request.gw, record.id)
    return await _keys_page(request, 201, created={"key": raw, "record": record})


async def update_key(request: Request) -> Page:
    known = set(request.gw.settings.models)
    try:
        fields = forms.key_fields(request, known)
        record = await keys.update_key(
            request.gw.store, request.user, request.params["id"], fields, known_models=known
        )
    except ApiError as exc:
        return await _keys_page(request, exc.status, error=str(exc))
    await announce(request.gw, record.id)
    return await _keys_page(request, notice="saved")


async def revoke_key(request: Request) -> Page:
    record = await keys.revoke_key(request.gw.store, request.user, request.params["id"])
    await announce(request.gw, record.id)
    return await _keys_page(request, notice="revoked")


async def _usage(request: Request) -> tuple[AccountRecord, int, charts.Series, charts.Series]:
    account = await _account(request)
    days = _days(request)
    store = request.gw.store
    by_model = await charts.daily(store, account_id=account.id, days=days, by="model")
    by_key = await charts.daily(store, account_id=account.id, days=days, by="key")
    return account, days, by_model, by_key


async def usage_page(request: Request) -> Page:
    account, days, by_model, by_key = await _usage(request)
    return render(
        request,
        "usage.html",
        account=account,
        days=days,
        ranges=charts.RANGES,
        by_model=by_model,
        by_key=by_key,
        cost_chart=by_model.chart("cost"),
        token_chart=by_model.chart("tokens"),
        key_chart=by_key.chart("cost"),
        account_arg=_with_account(request),
    )


CSV_COLUMNS = ("day", "group", "name", "requests", "prompt_tokens", "cached_tokens",
               "completion_tokens", "reasoning_tokens", "cost_usd")  # fmt: skip


async def usage_csv(request: Request) -> Page:
    account, days, by_model, by_key = await _usage(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for group, series in (("model", by_model), ("key", by_key)):
        for row in sorted(series.rows, key=lambda r: (r["day"], r["label"])):
            writer.writerow([row["day"], group, _cell(row["label"]),
                             *(row[c] for c in CSV_COLUMNS[3:])])  # fmt: skip
    name = f"relaygate-usage-{account.id}-{days}d.csv"
    disposition = f'attachment; filename="{name}"'.encode()
    return Page(out.getvalue().encode(), 200, b"text/csv; charset=utf-8",
                [(b"content-disposition", disposition)])  # fmt: skip


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def request_log(request: Request) -> Page:
    account_id = request.account_id()
    account = await accounts.get_account(request.gw.store, request.user, account_id)
    q = request.query
    wanted = (q.get("request_id") or "").strip()
    found: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    cursor = None
    if wanted:
        found = await usage.find_request(request.gw.store, wanted, account_id=account_id)
        rows = [found] if found else []
    else:
        rows, cursor = await usage.request_log(
            request.gw.store,
            account_id=account_id,
            key_id=q.get("key") or None,
            model=q.get("model") or None,
            status=q.get("status") or None,
            limit=LOG_PAGE,
            cursor=q.get("cursor") or None,
        )
    filters = {k: q.get(k, "") for k in ("key", "model", "status")}
    account_arg = _with_account(request)
    next_link = (
        query_args(account=account_arg, cursor=cursor, **filters) if cursor is not None else None
    )
    return render(
        request, "requests.html", account=account, rows=rows, filters=filters,
        request_id=wanted, searched=bool(wanted), next_link=next_link,
        models=sorted(request.gw.settings.models), account_arg=account_arg,
    )  # fmt: skip


async def _billing(request: Request, status: int = 200, **extra: Any) -> Page:
    account = await _account(request)
    grants = await credits.list_grants(request.gw.store, request.user, account.id, limit=100)
    values: dict[str, Any] = {"error": None, "redeemed": None, **extra}
    return render(
        request, "billing.html", status, account=account, balance=balance(account),
        grants=grants, account_arg=_with_account(request), **values,
    )  # fmt: skip


async def billing(request: Request) -> Page:
    return await _billing(request)


async def redeem(request: Request) -> Page:
    code = request.field("code")
    try:
        if not code:
            raise InvalidRequest("code: enter the code you were given", param="code")
        grant = await codes.redeem(request.gw.store, request.user, request.account_id(), code)
    except ApiError as exc:
        return await _billing(request, exc.status, error=str(exc))
    await announce(request.gw, grant.account_id)
    return await _billing(request, redeemed=grant)
