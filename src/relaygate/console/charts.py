"""Usage shaped for the console's charts and tables: daily series per model (or key), read
with :func:`relaygate.accounts.usage.usage_report` (the rollups) like the JSON API's reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relaygate.accounts import usage
from relaygate.store.sql import SqlStore

DAY_MS = 86_400_000
MAX_SERIES = 6
"""Models (or keys) drawn each as its own line; the rest are summed as one more."""
RANGES = (7, 30, 90)
clock = time.time
"""Where "today" comes from (a bench over seeded history sets it to the history's end)."""


@dataclass(slots=True)
class Series:
    """Daily values of several series over the same days (what uPlot draws)."""

    days: list[int] = field(default_factory=list)
    """Each day's start, unix seconds (UTC)."""
    labels: list[str] = field(default_factory=list)
    cost: list[list[int]] = field(default_factory=list)
    """Micro-USD per label per day."""
    tokens: list[list[int]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One row per (day, label) with usage: the CSV."""
    totals: list[dict[str, Any]] = field(default_factory=list)
    """The whole range per model (or key), highest cost first: the table."""

    def chart(self, metric: str = "cost") -> dict[str, Any]:
        """The chart's JSON: x values and one series per label (cost in USD)."""
        values = self.cost if metric == "cost" else self.tokens
        scale = 1_000_000 if metric == "cost" else 1
        return {
            "metric": metric,
            "x": self.days,
            "series": [
                {"label": label, "values": [v / scale for v in series]}
                for label, series in zip(self.labels, values, strict=True)
            ],
        }


def day_range(days: int, now: float | None = None) -> tuple[int, int]:
    """``[start, end)`` in unix milliseconds: the last ``days`` UTC days, today included."""
    today = int((clock() if now is None else now) * 1000) // DAY_MS * DAY_MS
    return today - (days - 1) * DAY_MS, today + DAY_MS


def month_start(now: float | None = None) -> int:
    moment = datetime.fromtimestamp(clock() if now is None else now, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def _tokens(view: dict[str, Any]) -> int:
    return int(view["prompt_tokens"]) + int(view["completion_tokens"])


async def daily(
    store: SqlStore,
    *,
    account_id: str | None,
    key_id: str | None = None,
    by: str = "model",
    days: int = 30,
) -> Series:
    """Cost and tokens per day per model (``by="model"``) or key (``by="key"``): the
    :data:`MAX_SERIES` biggest each a series, the others summed as ``other``."""
    start, end = day_range(days)
    scope: dict[str, Any] = {"account_id": account_id, "start_ms": start, "end_ms": end}
    if key_id is not None:
        scope["key_id"] = key_id
    ranked = await usage.usage_report(store, group_by=by, **scope)
    name = "key_id" if by == "key" else "model"
    top = [str(view[name]) for view in ranked[:MAX_SERIES]]
    result = Series(days=[(start + i * DAY_MS) // 1000 for i in range(days)], totals=ranked)
    index = {day * 1000: i for i, day in enumerate(result.days)}
    for label in top:
        only = {"key_id": label} if by == "key" else {"model": label}
        views = await usage.usage_report(store, group_by="day", **{**scope, **only})
        _add(result, label, views, index)
    if len(ranked) > MAX_SERIES:
        totals = await usage.usage_report(store, group_by="day", **scope)
        _add_rest(result, totals, index)
    return result


def _add(result: Series, label: str, views: list[dict[str, Any]], index: dict[int, int]) -> None:
    cost, tokens = [0] * len(index), [0] * len(index)
    for view in views:
        i = index.get(view["start_ms"])
        if i is None:
            continue
        cost[i], tokens[i] = int(view["cost_micros"]), _tokens(view)
        result.rows.append({"label": label, **view})
    result.labels.append(label)
    result.cost.append(cost)
    result.tokens.append(tokens)


def _add_rest(result: Series, totals: list[dict[str, Any]], index: dict[int, int]) -> None:
    cost, tokens = [0] * len(index), [0] * len(index)
    for view in totals:
        i = index.get(view["start_ms"])
        if i is None:
            continue
        cost[i] = int(view["cost_micros"]) - sum(series[i] for series in result.cost)
        tokens[i] = _tokens(view) - sum(series[i] for series in result.tokens)
    result.labels.append("other")
    result.cost.append(cost)
    result.tokens.append(tokens)
