"""Usage reports and the request log: what ``/admin/v1/usage`` and ``/admin/v1/requests`` serve.

Reports come from the usage rollups (per hour and per day), never from the ledger, and are
hour-granular: ``start_ms`` is rounded down and ``end_ms`` up to whole UTC hours, so a report
covers every hour that overlaps ``[start_ms, end_ms)`` (:func:`covered_range` gives the range a
report actually covers, for the response to say so). Days are UTC days.

The request log reads the ledger newest first with keyset pagination: the cursor names the last
row of the previous page (created_at, request id), so a page costs the same at any depth and
rows sharing a created_at are neither skipped nor repeated.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from relaygate.accounting.prices import micros_to_usd
from relaygate.errors import InvalidRequest, excerpt
from relaygate.store.rollups import STATUSES
from relaygate.store.schema import ROLLUP_SUMS
from relaygate.store.usage_sql import (
    GROUPS,
    Filters,
    hour_ceil,
    hour_floor,
    ledger_page,
    usage_totals,
)

if TYPE_CHECKING:
    from relaygate.store.records import LedgerRow
    from relaygate.store.sql import SqlStore

MAX_LIMIT = 500
"""The most rows one request-log page holds."""
MAX_HOURS = 31 * 24
"""The longest range a report grouped by hour covers (31 days: 744 groups; longer ranges are
grouped by day)."""
_MAX_MS = 253_402_300_799_999
"""The last millisecond of the year 9999 (the latest time a bound may name)."""
_TOKENS = (
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "image_tokens",
    "prompt_audio_tokens",
    "completion_audio_tokens",
)
_COST_PARTS = (
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
)


def _bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    for name, value in (("from", start_ms), ("to", end_ms)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS
        ):
            raise InvalidRequest(
                f"{name} must be a time in unix milliseconds, got {excerpt(value)}", param=name
            )
    start = 0 if start_ms is None else start_ms
    end = int(time.time() * 1000) if end_ms is None else end_ms
    if start > end:
        raise InvalidRequest(
            f"from ({start}) is after to ({end}): the range is empty the wrong way round",
            param="from",
        )
    return start, end


def parse_time(name: str, value: str | None) -> int | None:
    """A ``from``/``to`` query value as unix milliseconds: digits (unix milliseconds), or an ISO
    8601 date or time (``2026-11-01``, ``2026-11-01T12:30:00Z``; UTC when no offset is given).
    ``None`` or empty: no bound."""
    if value is None or value == "":
        return None
    bad = InvalidRequest(
        f"{name} must be unix milliseconds or an ISO 8601 date or time, got {excerpt(value)}",
        param=name,
    )
    if value.isdigit():
        if len(value) > 15:
            raise bad
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if len(value) <= 40 else "")
    except ValueError:
        raise bad from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def covered_range(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """The range a report over ``[start_ms, end_ms)`` covers: whole hours that overlap it
    (``None`` bounds: from the first row, up to now)."""
    start, end = _bounds(start_ms, end_ms)
    return hour_floor(start), hour_ceil(end)


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=1024)
def _day_text(day: int) -> str:
    """The UTC date of day number ``day`` since the epoch."""
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


def _usd(micros: int) -> str:
    return str(micros_to_usd(micros))


_INDEX = {name: i for i, name in enumerate(ROLLUP_SUMS)}
_COUNTS = ("requests", *_TOKENS)
_count_values = itemgetter(*(_INDEX[name] for name in _COUNTS))
_COSTS = ("cost_micros", *_COST_PARTS)
_cost_values = itemgetter(*(_INDEX[name] for name in _COSTS))
_STATUS_NAMES = (*STATUSES, "other")
_status_values = itemgetter(*(_INDEX[f"status_{name}"] for name in _STATUS_NAMES))
_LATENCY = _INDEX["latency_ms"]


def _group_view(group_by: str, group: Any, sums: list[int]) -> dict[str, Any]:
    """One report group (called for each of up to 744 hours: kept lean)."""
    view: dict[str, Any]
    if group_by == "hour":
        day, hour = divmod(group // 3_600_000, 24)
        view = {"hour": f"{_day_text(day)}T{hour:02d}:00:00Z", "start_ms": group}
    elif group_by == "day":
        view = {"day": _day_text(group // 86_400_000), "start_ms": group}
    else:
        view = {"key_id" if group_by == "key" else "model": group}
    view.update(zip(_COUNTS, _count_values(sums), strict=True))
    costs = _cost_values(sums)
    view["cost_usd"] = _usd(costs[0])
    view.update(zip(_COSTS, costs, strict=True))
    requests = sums[0]
    view["mean_latency_ms"] = sums[_LATENCY] // requests if requests > 0 else 0
    view["statuses"] = {
        name: count
        for name, count in zip(_STATUS_NAMES, _status_values(sums), strict=True)
        if count
    }
    return view


def _text(name: str, value: str | None, limit: int = 200) -> str | None:
    if value is not None and (not isinstance(value, str) or not value or len(value) > limit):
        raise InvalidRequest(
            f"{name} must be a non-empty string of at most {limit} characters,"
            f" got {excerpt(value)}",
            param=name,
        )
    return value


def _filters(account_id: str | None, key_id: str | None, model: str | None) -> Filters:
    return Filters(
        account_id=_text("account", account_id, 40),
        key_id=_text("key", key_id, 40),
        model=_text("model", model),
    )


async def usage_report(
    store: SqlStore,
    *,
    account_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    group_by: str = "day",
) -> list[dict[str, Any]]:
    """Requests, tokens by kind and cost (USD as a decimal string, and micro-USD with its
    parts) per group: per hour or day (oldest first), or per model or key (highest cost
    first). Read from the rollups only; bounds are rounded out to whole hours."""
    filters = _filters(account_id, key_id, model)
    if group_by not in GROUPS:
        raise InvalidRequest(
            f"group_by must be one of {', '.join(GROUPS)}, got {excerpt(group_by)}",
            param="group_by",
        )
    start, end = covered_range(start_ms, end_ms)
    if group_by == "hour" and end - start > MAX_HOURS * 3_600_000:
        raise InvalidRequest(
            f"group_by=hour covers at most {MAX_HOURS // 24} days (give from, or use group_by=day)",
            param="group_by",
        )
    totals = await usage_totals(store, filters, group_by, start, end)
    views = [_group_view(group_by, group, sums) for group, sums in totals.items() if sums[0]]
    if group_by in ("hour", "day"):
        views.sort(key=lambda view: view["start_ms"])
    else:
        name = "key_id" if group_by == "key" else "model"
        views.sort(key=lambda view: (-view["cost_micros"], view[name]))
    return views


# --- the request log -------------------------------------------------------------------------


def encode_cursor(created_at: int, request_id: str) -> str:
    """An opaque cursor naming a row: the next page starts after it."""
    raw = f"{created_at}:{request_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    bad = InvalidRequest(
        f"cursor {excerpt(cursor)} is not one this API returned (pass next_cursor as it was)",
        param="cursor",
    )
    if not isinstance(cursor, str) or not 3 <= len(cursor) <= 120:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, request_id = raw.partition(":")
        created_at = int(created)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not created.isdigit() or not 0 < len(request_id) <= 64 or not request_id.isprintable():
        raise bad
    return created_at, request_id


def _part(tokens: int, micros: int) -> dict[str, Any]:
    return {"tokens": tokens, "cost_micros": micros, "cost_usd": _usd(micros)}


def _row_view(row: LedgerRow) -> dict[str, Any]:
    cached = min(row.cached_tokens, row.prompt_tokens)
    reasoning = min(row.reasoning_tokens, row.completion_tokens)
    return {
        "request_id": row.request_id,
        "created_at": row.created_at,
        "created": _iso(row.created_at).replace("Z", f".{row.created_at % 1000:03d}Z"),
        "account_id": row.account_id or None,
        "key_id": row.key_id,
        "model": row.model,
        "upstream": row.upstream,
        "upstream_model": row.upstream_model,
        "api": row.api,
        "status": row.status,
        "stream": row.stream,
        "latency_ms": row.latency_ms,
        **{name: getattr(row, name) for name in _TOKENS},
        "cache_write_tokens": row.cache_write_tokens,
        "cost_usd": _usd(row.cost_micros),
        "cost_micros": row.cost_micros,
        "cost": {
            "input": _part(row.prompt_tokens - cached, row.input_cost_micros),
            "cached_input": _part(cached, row.cached_cost_micros),
            "output": _part(row.completion_tokens - reasoning, row.output_cost_micros),
            "reasoning": _part(reasoning, row.reasoning_cost_micros),
        },
        # rows written before the cost was kept in parts hold zeros there
        "cost_parts_recorded": any(getattr(row, name) for name in _COST_PARTS)
        or row.cost_micros == 0,
    }


async def request_log(
    store: SqlStore,
    *,
    account_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    status: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Ledger rows newest first, each with its cost broken down (input, cached input, output
    and reasoning); returns the page and the cursor of the next one (``None``: the last page).
    Bounds are exact here: ``start_ms <= created_at < end_ms``."""
    filters = _filters(account_id, key_id, model)
    status = _text("status", status, 40)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(
            f"limit must be a whole number from 1 to {MAX_LIMIT}, got {excerpt(limit)}",
            param="limit",
        )
    if start_ms is not None or end_ms is not None:
        _bounds(start_ms if start_ms is not None else 0, end_ms if end_ms is not None else _MAX_MS)
    after = decode_cursor(cursor) if cursor is not None else None
    rows = await ledger_page(store, filters, status, start_ms, end_ms, after, limit + 1)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last.created_at, last.request_id)
    return [_row_view(row) for row in page], next_cursor
