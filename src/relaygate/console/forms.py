"""Form fields as the business layer takes them: money in micro-USD, limits as integers,
empty fields as "not set". Bad input is an :class:`InvalidRequest` naming the field."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from relaygate.accounts.accounts import usd_micros
from relaygate.console.web import Request
from relaygate.errors import InvalidRequest

LIMITS = ("rpm", "tpm", "concurrency")


def usd(request: Request, name: str, *, negative: bool = False, zero: bool = True) -> int | None:
    """A dollar amount field as micro-USD (``None`` when empty)."""
    raw = request.field(name).replace(",", ".").lstrip("$")
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidRequest(f"{name}: not an amount of dollars", param=name) from None
    return usd_micros(value, name, negative=negative, zero=zero)


def whole(request: Request, name: str, *, low: int = 1, high: int = 10**9) -> int | None:
    raw = request.field(name)
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name}: a whole number from {low} to {high}", param=name)
    return int(raw)


def key_fields(request: Request, known_models: set[str]) -> dict[str, Any]:
    """The key form: name, models (none ticked: every model), limits and spend cap."""
    fields: dict[str, Any] = {"name": request.field("name")}
    models = [m for m in request.form_lists.get("models", []) if m]
    fields["models"] = models or None
    for name in LIMITS:
        value = whole(request, name)
        fields["max_concurrency" if name == "concurrency" else name] = value
    cap = usd(request, "spend_limit_usd")
    fields["spend_limit_micros"] = cap
    period = request.field("spend_limit_period") or None
    fields["spend_limit_period"] = period if cap is not None else None
    return fields
