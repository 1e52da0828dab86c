"""The small endpoints: models, credits, health, metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from relaygate.accounting.prices import micros_to_usd
from relaygate.api.http import Receive, Scope, Send, header, send_bytes
from relaygate.metrics import CONTENT_TYPE
from relaygate.protocol.render import encoder
from relaygate.routing.health import State

if TYPE_CHECKING:
    from relaygate.app import Gateway


async def list_models(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    key = gw.keys.authenticate(header(scope, b"authorization"))
    data = [
        {"id": name, "object": "model", "created": gw.started_at, "owned_by": "relaygate"}
        for name in gw.catalog.allowed(key)
    ]
    await send_bytes(send, 200, encoder.encode({"object": "list", "data": data}))


async def credits(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    key = gw.keys.authenticate(header(scope, b"authorization"))
    balance = await gw.gate.balance(key)
    remaining = 0 if balance.unlimited else max(0, balance.granted - balance.used)
    body = {
        "object": "credits",
        "remaining_credits": micros_to_usd(remaining),
        "used_credits": micros_to_usd(balance.used),
        "unlimited_credits": balance.unlimited,
    }
    await send_bytes(send, 200, encoder.encode(body))


async def health(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    body = {
        "status": "ok",
        "uptime_seconds": int(time.time()) - gw.started_at,
        "store": gw.store.describe(),
        "limiter": gw.gate.description,
        "ledger_pending": len(gw.ledger.pending),
        "models": {
            name: [p.label for p in model.upstreams] for name, model in gw.catalog.models.items()
        },
        # Each upstream's health (healthy, ejected or probing); /health stays 200 regardless.
        "upstreams": {
            name: [h.snapshot() for h in model.health] for name, model in gw.catalog.models.items()
        },
    }
    await send_bytes(send, 200, encoder.encode(body))


async def metrics(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    gw.metrics.ledger_pending.set(len(gw.ledger.pending))
    gw.metrics.uncharged.set(gw.admissions.uncharged_micros)
    for name, model in gw.catalog.models.items():
        for tracker in model.health:
            for state in State:
                gw.metrics.upstream_state.labels(name, tracker.label, state.value).set(
                    1 if tracker.state is state else 0
                )
            gw.metrics.upstream_ejections.labels(name, tracker.label).set(tracker.ejections)
    await send_bytes(send, 200, gw.metrics.render(), content_type=CONTENT_TYPE)
