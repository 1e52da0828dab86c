"""The small endpoints: models, credits, health, metrics.

``GET /health`` is public and says only whether this process serves. The operator endpoints,
``GET /health/details`` and ``GET /metrics``, show the store, models, upstreams, their errors and
traffic: they need ``Authorization: Bearer <operator_token>`` (compared in constant time; API
keys are never accepted), and answer 403 while no ``operator_token`` is configured.

``/v1/models`` and ``/v1/models/{id}`` take the key in ``x-api-key`` too (before
``Authorization: Bearer``), as ``/v1/messages`` does, and answer in Anthropic's Models shape
(:mod:`relaygate.protocol.anthropic_messages.models`) to a request with an
``anthropic-version`` header, as Anthropic's SDKs and Claude Code send; errors stay in the
contract's shape (Anthropic's SDKs tell them by status).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import cache
from typing import TYPE_CHECKING

from relaygate.accounting.prices import micros_to_usd
from relaygate.api.http import Receive, Scope, Send, header, send_bytes
from relaygate.errors import AuthenticationFailed, NotFound, PermissionDenied, excerpt
from relaygate.metrics import CONTENT_TYPE
from relaygate.protocol.anthropic_messages.models import model_info, model_page
from relaygate.protocol.render import encoder
from relaygate.routing.catalog import closest, may_use
from relaygate.routing.health import State

if TYPE_CHECKING:
    from relaygate.app import Gateway
    from relaygate.store.records import KeyRecord


def _model_key(gw: Gateway, scope: Scope) -> KeyRecord:
    """The key of a models request: ``x-api-key`` (Anthropic's clients), else the bearer."""
    bare = header(scope, b"x-api-key")
    if bare is not None:
        return gw.keys.authenticate(b"Bearer " + bare)
    return gw.keys.authenticate(header(scope, b"authorization"))


def _model(gw: Gateway, name: str, anthropic: bool) -> dict[str, object]:
    if anthropic:
        limit = gw.catalog.models[name].settings.max_output_tokens
        return model_info(name, gw.started_at, limit)
    return {"id": name, "object": "model", "created": gw.started_at, "owned_by": "relaygate"}


async def list_models(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """The models this key may use, in OpenAI's shape (Anthropic's, one page, to an Anthropic
    client); a model no upstream serves is left out (it would answer every request 503:
    clients pick models from this list)."""
    key = _model_key(gw, scope)
    anthropic = header(scope, b"anthropic-version") is not None
    data = [
        _model(gw, name, anthropic) for name in gw.catalog.allowed(key) if name not in gw.unserved
    ]
    if anthropic:
        page = model_page(data, scope.get("query_string", b""))
        await send_bytes(send, 200, encoder.encode(page))
        return
    await send_bytes(send, 200, encoder.encode({"object": "list", "data": data}))


async def retrieve_model(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /v1/models/{id}`` in OpenAI's shape; 404 (with the closest model the key may use)
    for a model that does not exist and for one the key may not use alike, so that a key
    cannot learn which models exist beyond its own. Anthropic's shape to an Anthropic client."""
    key = _model_key(gw, scope)
    name = scope["path"].rstrip("/")[len("/v1/models/") :]
    if name not in gw.catalog.models or not may_use(key, name):
        raise NotFound(
            f"The model {excerpt(name)} does not exist or this key may not use it",
            param="model",
            fallback_suggestion=closest(name, gw.catalog.allowed(key)),
        )
    body = _model(gw, name, header(scope, b"anthropic-version") is not None)
    await send_bytes(send, 200, encoder.encode(body))


async def credits(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """What the key can still spend: the smaller of its account's balance and what is left of
    its spend cap this period; ``used_credits`` is what the account has used (its keys
    together); ``unlimited_credits`` only for an unlimited account's key without a cap."""
    key = gw.keys.authenticate(header(scope, b"authorization"))
    balance = await gw.gate.balance(key)
    body = {
        "object": "credits",
        "remaining_credits": micros_to_usd(balance.remaining),
        "used_credits": micros_to_usd(balance.used),
        "unlimited_credits": balance.is_unlimited,
    }
    await send_bytes(send, 200, encoder.encode(body))


@cache
def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def require_operator(gw: Gateway, scope: Scope) -> None:
    """Pass only a request bearing the configured ``operator_token``."""
    expected = gw.settings.operator_token
    if expected is None:
        raise PermissionDenied(
            "The operator endpoints (/health/details, /metrics) are disabled:"
            " set operator_token in the config to use them"
        )
    scheme, _, token = (header(scope, b"authorization") or b"").partition(b" ")
    presented = hashlib.sha256(token.strip()).digest()
    if scheme.lower() != b"bearer" or not hmac.compare_digest(presented, _digest(expected)):
        raise AuthenticationFailed(
            "The operator endpoints need 'Authorization: Bearer <operator_token>'"
            " (API keys are not accepted here)"
        )


async def health(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Public: 200 ``{"status": "ok"}`` while serving, 503 before start-up ends and from
    shutdown on."""
    if gw.ready:
        await send_bytes(send, 200, b'{"status":"ok"}')
    else:
        await send_bytes(send, 503, b'{"status":"unavailable"}')


async def health_details(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    require_operator(gw, scope)
    body = {
        "status": "ok" if gw.ready else "unavailable",
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
    require_operator(gw, scope)
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
