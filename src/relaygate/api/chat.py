"""``POST /v1/chat/completions``: authenticate, validate, admit, route, answer, settle.

Every 4xx is decided here before any upstream call; upstream failures arrive as
:class:`relaygate.errors.UpstreamError` from the router or the providers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from relaygate.accounting.fields import check_price_fields
from relaygate.api.http import Receive, Scope, Send, header, read_body, send_bytes
from relaygate.api.stream import stream_answer
from relaygate.errors import InvalidRequest, UpstreamError
from relaygate.media.tokens import TILE_FORMULA_PROVIDERS
from relaygate.protocol.assemble import Collected
from relaygate.protocol.ids import completion_id
from relaygate.protocol.render import encoder
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import decode_chat_request, images_of, reparse
from relaygate.providers.base import ProviderRequest
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.fallback import fallback_chain, open_chain
from relaygate.routing.router import AnswerCancelled, Opened, no_upstream

if TYPE_CHECKING:
    from relaygate.accounting.admission import Ticket
    from relaygate.app import Gateway


def check_for_model(request: ChatRequest, model: CatalogModel) -> None:
    """Checks that depend on the model: images, output length, price-changing fields."""
    images = images_of(request)
    if images and not model.settings.vision:
        m, p, _ = images[0]
        raise InvalidRequest(
            f"Model {model.name!r} does not accept images (image_url parts); use a vision model",
            param=f"messages[{m}].content[{p}]",
        )
    limit = model.settings.max_output_tokens
    for field, asked in (
        ("max_tokens", request.max_tokens),
        ("max_completion_tokens", request.max_completion_tokens),
    ):
        if asked is not None and asked > limit:
            raise InvalidRequest(
                f"{field} is too large: {asked} (model {model.name!r} allows at most {limit})",
                param=field,
            )
    check_price_fields(request, model.name, model.settings)


async def chat_completions(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    key = gw.keys.authenticate(header(scope, b"authorization"))
    settings = gw.settings
    body = await read_body(
        scope, receive, settings.max_request_bytes,
        key.id, key.max_concurrency, settings.max_body_bytes_in_flight,
    )  # fmt: skip
    request, raw = decode_chat_request(body)
    model = gw.catalog.resolve(request.model, key)
    check_for_model(request, model)
    chain = fallback_chain(gw.catalog, model, request, key)
    if not any(candidate.upstreams for candidate in chain):
        raise no_upstream(model)
    request_id = completion_id()
    ticket = await gw.admissions.admit(
        key, model, request, len(body), request_id, fallbacks=chain[1:]
    )
    if ticket.output_limit is not None:
        # no limit asked, and the worst case was more than the key can spend: the upstream is
        # sent the limit the money affords (clamp_output_to_balance)
        raw = {**raw, "max_completion_tokens": ticket.output_limit}
        request = msgspec.structs.replace(request, max_completion_tokens=ticket.output_limit)
    try:
        # Images are fetched and checked after admission, so a key's limits also cap the
        # fetches it can cause; nothing has reached an upstream yet.
        forward = gw.settings.images.forward_urls
        prepared = await gw.images.prepare(
            request, raw, vision=model.settings.vision, inline=not forward, key=key.id
        )
        if prepared.raw is not raw:
            request = reparse(prepared.raw)
    except BaseException:
        await gw.admissions.cancel(ticket)
        raise
    call = ProviderRequest(
        request=request,
        raw=prepared.raw,
        upstream_model=model.name,
        stream=request.stream,
        request_id=request_id,
        images=prepared if forward and prepared.images else None,
    )
    gw.admissions.going_upstream(ticket)
    try:
        ticket.model, opened = await open_chain(chain, call, gw.metrics.routing)
    except BaseException as exc:
        upstream = exc.upstream if isinstance(exc, UpstreamError) else ""
        usage, status = None, "upstream_error"
        if isinstance(exc, AnswerCancelled):  # billed as a disconnect, on the upstream it was on
            ticket.model, upstream, status = exc.model, exc.upstream, "cancelled"
            usage = exc.received.usage_or_estimate(ticket.prompt_guess)
        await gw.admissions.settle(ticket, usage, status, upstream, call.upstream_model)
        raise
    gw.metrics.upstream_answered(ticket.model.name, opened.provider.label)
    if prepared.images and opened.provider.name in TILE_FORMULA_PROVIDERS:
        ticket.image_tokens = prepared.tokens
    if request.stream:
        await stream_answer(
            gw.admissions,
            ticket,
            opened,
            request,
            send,
            receive,
            gw.settings.stream_keepalive_seconds,
            gw.settings.disconnect_drain_seconds,
        )
    else:
        await _complete_answer(gw, ticket, opened, send)


async def _complete_answer(gw: Gateway, ticket: Ticket, opened: Opened, send: Send) -> None:
    collected = Collected()
    status = "cancelled"
    try:
        async for batch in opened.events:
            for event in batch:
                collected.add(event)
        status = "ok"
    except UpstreamError:
        status = "upstream_error"
        raise
    except Exception:
        status = "internal_error"  # a fault of relaygate's (cancellation keeps ``cancelled``)
        raise
    finally:
        # A cancelled answer (the shutdown deadline), or one relaygate failed on, is billed as
        # a disconnect: the prompt estimate plus the tokens received (the upstream billed them).
        usage = (
            collected.usage_or_estimate(ticket.prompt_guess, ticket.image_tokens)
            if status != "upstream_error"
            else None
        )
        await gw.admissions.settle(
            ticket, usage, status, opened.provider.label, opened.upstream_model
        )
    assert usage is not None
    answer = collected.completion(ticket.request_id, ticket.model.name, int(time.time()), usage)
    await send_bytes(
        send,
        200,
        encoder.encode(answer),
        headers=[
            (b"x-request-id", ticket.request_id.encode()),
            (b"x-relaygate-upstream", opened.provider.label.encode()),
            (b"x-relaygate-model", ticket.model.name.encode()),
        ],
    )
