"""The one request path every model route shares; a route brings only its dialect.

authenticate → read the body → decode (the route's dialect → the internal request) → resolve
the model (permission, fallback suggestion) → the route's checks → fallback chain → admit (rate
limits + credit reservation, one step) → images (fetched and checked, SSRF guard) → open the
chain upstream → the answer, streamed or whole, rendered by the route → settle (charge, release,
ledger row, also on disconnect).

A route (:class:`Route`) is a decoder, an answer renderer and an error shape. Every 4xx is
decided before any upstream call; upstream failures arrive as
:class:`relaygate.errors.UpstreamError` from the router or the providers. When the client's
dialect is one an upstream speaks, the decoder also keeps the client's own body
(:class:`relaygate.providers.base.Native`): that provider passes it through with only ``model``
rewritten, and its answer comes back as :class:`relaygate.providers.base.Passthrough` bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from relaygate import tracing
from relaygate.access import SCOPE_KEY as ACCESS_SCOPE
from relaygate.accounting.fields import check_price_fields
from relaygate.api.http import JSON, Receive, Scope, Send, header, read_body
from relaygate.api.stream import StreamRenderer, stream_answer
from relaygate.errors import ApiError, InvalidRequest, UpstreamError
from relaygate.media.pipeline import PreparedImages
from relaygate.media.tokens import TILE_FORMULA_PROVIDERS
from relaygate.protocol.assemble import Collected
from relaygate.protocol.ids import completion_id
from relaygate.protocol.render import CONTRACT, ErrorShape
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import ImageAt, images_of, reparse
from relaygate.providers.base import Native, ProviderRequest, TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.fallback import fallback_chain, open_chain
from relaygate.routing.router import AnswerCancelled, Opened, Replay, no_upstream, open_upstream

if TYPE_CHECKING:
    from relaygate.access import Access
    from relaygate.accounting.admission import Ticket
    from relaygate.app import Gateway
    from relaygate.store.records import KeyRecord

log = logging.getLogger("relaygate.pipeline")


@dataclass(slots=True)
class Decoded:
    """A client's request as the pipeline needs it."""

    request: ChatRequest
    """The internal request: checks, estimates, and every provider's translation start here."""
    raw: dict[str, Any]
    """The internal request as a chat-completions body (OpenAI-compatible upstreams take it
    with ``model`` rewritten)."""
    native: Native | None = None
    """The client's own body, for an upstream that speaks the client's dialect."""
    cache_writes: bool = False
    """The request asks the upstream to write its prompt cache (reserved at that price)."""
    extra: Any = None
    """What the route's own checks need (its dialect's decoded request)."""
    prompt_bytes: int | None = None
    """The size of what the request sends upstream, which bounds its prompt (the credit
    reservation): the client's body (``None``), or more (a stored conversation continued, the
    pages of a PDF)."""
    deferred: bool = False
    """The route completes the request once it is admitted (:meth:`Route.admitted`)."""


def check_for_model(request: ChatRequest, model: CatalogModel) -> list[ImageAt]:
    """Checks that depend on the model: images, output length, price-changing fields.
    Returns the request's images (:func:`~relaygate.protocol.validate.images_of`)."""
    images = images_of(request)
    settings = model.settings
    if images and not settings.vision:
        m, p, _ = images[0]
        raise InvalidRequest(
            f"Model {model.name!r} does not accept images (image_url parts); use a vision model",
            param=f"messages[{m}].content[{p}]",
        )
    limit = settings.max_output_tokens
    if request.max_tokens is not None and request.max_tokens > limit:
        raise _too_large(model, "max_tokens", request.max_tokens, limit)
    if request.max_completion_tokens is not None and request.max_completion_tokens > limit:
        raise _too_large(model, "max_completion_tokens", request.max_completion_tokens, limit)
    check_price_fields(request, model.name, settings)
    return images


def _too_large(model: CatalogModel, field: str, asked: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"{field} is too large: {asked} (model {model.name!r} allows at most {limit})",
        param=field,
    )


class Route:
    """One client dialect's route through the pipeline: subclasses decode and render."""

    api: ClassVar[str] = ""
    """The ledger's name for the API (``chat``, ``messages``, ``responses``)."""
    shape: ClassVar[ErrorShape] = CONTRACT
    """How this route's errors look."""

    key_header: ClassVar[bytes | None] = None
    """A header holding the bare key (Anthropic's ``x-api-key``), read before
    ``Authorization: Bearer``."""

    loads: ClassVar[bool] = False
    """The route overrides :meth:`load` (set for each subclass): else the pipeline calls
    :meth:`decode` itself, with no coroutine in between."""
    finishes: ClassVar[bool] = False
    """The route overrides :meth:`finish` (set for each subclass): else there is no last step
    to await."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.loads = cls.load is not Route.load
        cls.finishes = cls.finish is not Route.finish

    def decode(self, body: bytes, scope: Scope) -> Decoded:
        raise NotImplementedError

    async def load(self, gw: Gateway, key: KeyRecord, body: bytes, scope: Scope) -> Decoded:
        """:meth:`decode`, for a route that needs the store to decode (the Responses route
        reads a stored conversation)."""
        return self.decode(body, scope)

    async def admitted(self, gw: Gateway, decoded: Decoded, ticket: Ticket) -> None:
        """Complete a ``deferred`` request once it is admitted (the Responses route reads the
        stored conversation it continues only then); an error releases the admission."""

    def client_param(self, decoded: Decoded, param: str) -> str:
        """Where in the client's own body a part of the internal request came from (an image
        refused as ``messages[0].content[1]``, say); the same path by default."""
        return param

    def output_limited(self, decoded: Decoded, limit: int) -> None:
        """The request asked no output limit and is sent ``limit`` (what the key can afford):
        a route that keeps a native body sets it there too."""

    async def finish(
        self, gw: Gateway, ticket: Ticket, decoded: Decoded, collected: Collected | None
    ) -> None:
        """A last step of a complete answer, after it is settled and before its end reaches
        the client (``collected``: the non-streamed answer; ``None`` for a stream)."""

    def check(self, decoded: Decoded, model: CatalogModel) -> None:
        """The route's own checks that depend on the model (400 before admission), made
        before :func:`check_for_model` when the decoder set ``Decoded.extra``."""

    def fallbacks(self, decoded: Decoded, chain: list[CatalogModel]) -> list[CatalogModel]:
        """The fallback chain (the requested model first) this request may use."""
        return chain

    def images_prepared(self, decoded: Decoded, prepared: PreparedImages) -> None:
        """The images were checked (and maybe inlined in ``prepared.raw``): a route that keeps
        a native body rewrites its images alike."""

    id_prefix: ClassVar[str] = "chatcmpl-"
    """How the request's id begins (the ledger's request id, and the answer's)."""

    def stream_writer(self, ticket: Ticket, decoded: Decoded) -> StreamRenderer:
        raise NotImplementedError

    def body(
        self, ticket: Ticket, collected: Collected, usage: TokenUsage, decoded: Decoded
    ) -> bytes:
        """The non-streamed answer."""
        raise NotImplementedError


def credentials(route: Route, scope: Scope) -> bytes | None:
    """The ``Authorization`` value to authenticate (``Bearer <key>``)."""
    if route.key_header is not None:
        bare = header(scope, route.key_header)
        if bare is not None:
            return b"Bearer " + bare
    return header(scope, b"authorization")


async def serve(route: Route, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request of ``route`` (see the module docstring); a route's handler is this
    with its route bound (``functools.partial``: no frame of its own on the hot path)."""
    access: Access | None = scope.get(ACCESS_SCOPE)  # the request log's record
    traced = tracing.enabled  # (set once at start: one look-up per request, not one a step)
    if route.key_header is None:
        key = gw.keys.authenticate(header(scope, b"authorization"))
    else:
        key = gw.keys.authenticate(credentials(route, scope))
    if access is not None:
        access.key = key
    if traced:
        tracing.authenticated(key)
    settings = gw.settings
    body = await read_body(
        scope, receive, settings.max_request_bytes,
        key.id, key.max_concurrency, settings.max_body_bytes_in_flight,
    )  # fmt: skip
    if route.loads:
        decoded = await route.load(gw, key, body, scope)
    else:  # the route decodes without the store: no coroutine for it
        decoded = route.decode(body, scope)
    request = decoded.request
    if access is not None:
        access.model, access.stream = request.model, request.stream
    model = gw.catalog.resolve(request.model, key)
    if access is not None:
        access.model, access.model_known = model.name, True
    if traced:
        tracing.requested(route.api, request)
    if decoded.extra is not None:
        route.check(decoded, model)
    images = check_for_model(request, model)
    chain = fallback_chain(gw.catalog, model, request, key)
    if len(chain) > 1:
        chain = route.fallbacks(decoded, chain)
    for candidate in chain:  # (``any`` over a generator throws GeneratorExit into it)
        if candidate.upstreams:
            break
    else:
        raise no_upstream(model)
    request_id = completion_id(None, route.id_prefix)
    if traced:
        tracing.begin("relaygate.admission")
    ticket = await gw.admissions.admit(
        key, model, request, len(body) if decoded.prompt_bytes is None else decoded.prompt_bytes,
        request_id, chain[1:],
        api=route.api, cache_writes=decoded.cache_writes,
        images=[part for _, _, part in images] if images else [],
    )  # fmt: skip
    ticket.access = access
    if decoded.deferred:
        try:
            await route.admitted(gw, decoded, ticket)
        except BaseException:
            await gw.admissions.cancel(ticket)
            raise
        request = decoded.request
    if traced:
        tracing.admitted(ticket)
    raw = decoded.raw
    if ticket.output_limit is not None:
        # no limit asked, and the worst case was more than the key can spend: the upstream is
        # sent the limit the money affords (clamp_output_to_balance)
        raw = {**raw, "max_completion_tokens": ticket.output_limit}
        request = msgspec.structs.replace(request, max_completion_tokens=ticket.output_limit)
        route.output_limited(decoded, ticket.output_limit)
    try:
        # Images are fetched and checked after admission, so a key's limits also cap the
        # fetches it can cause; nothing has reached an upstream yet.
        forward = settings.images.forward_urls
        if images or decoded.deferred:  # (a deferred request may have changed since)
            prepared = await gw.images.prepare(
                request, raw, vision=model.settings.vision, inline=not forward, key=key.id
            )
        else:  # what prepare finds in a request without images, without its coroutine
            prepared = PreparedImages(raw)
        if prepared.raw is not raw:
            request = reparse(prepared.raw)
        if prepared.images:
            route.images_prepared(decoded, prepared)
    except BaseException as exc:
        await gw.admissions.cancel(ticket)
        if isinstance(exc, ApiError) and exc.param:
            exc.param = route.client_param(decoded, exc.param)
        raise
    call = ProviderRequest(
        request=request,
        raw=prepared.raw,
        upstream_model=model.name,
        stream=request.stream,
        request_id=request_id,
        images=prepared if forward and prepared.images else None,
        native=decoded.native,
    )
    gw.admissions.going_upstream(ticket)
    routing = gw.metrics.routing
    if access is not None:
        access.upstream_called = perf_counter()
    try:
        if len(chain) == 1:  # no fallback: open_chain's one step, without its coroutine
            ticket.model, opened = chain[0], await open_upstream(chain[0], call, metrics=routing)
        else:
            ticket.model, opened = await open_chain(chain, call, routing)
    except BaseException as exc:
        upstream = exc.upstream if isinstance(exc, UpstreamError) else ""
        usage, status = None, "upstream_error"
        if isinstance(exc, AnswerCancelled):  # billed as a disconnect, on the upstream it was on
            ticket.model, upstream, status = exc.model, exc.upstream, "cancelled"
            usage = exc.received.usage_or_estimate(ticket.prompt_guess)
        await gw.admissions.settle(ticket, usage, status, upstream, call.upstream_model)
        raise
    if access is not None:
        access.upstream_answered = perf_counter()
    gw.metrics.upstream_answered(ticket.model.name, opened.provider.label)
    if prepared.images and opened.provider.name in TILE_FORMULA_PROVIDERS:
        ticket.image_tokens = prepared.tokens
    if request.stream:
        await stream_answer(
            gw.admissions,
            ticket,
            opened,
            route.stream_writer(ticket, decoded),
            send,
            receive,
            settings.stream_keepalive_seconds,
            settings.disconnect_drain_seconds,
            before_end=(lambda: route.finish(gw, ticket, decoded, None))
            if route.finishes
            else None,
        )
    else:
        await _complete_answer(gw, route, ticket, decoded, opened, send)


async def _complete_answer(
    gw: Gateway, route: Route, ticket: Ticket, decoded: Decoded, opened: Opened, send: Send
) -> None:
    collected = Collected(image_tokens=ticket.image_tokens)
    add = collected.add
    status = "cancelled"
    events = opened.events
    try:
        if type(events) is Replay:  # read whole by the router: its batches, without awaiting
            for batch in events.batches:
                for event in batch:
                    add(event)
        else:
            async for batch in events:
                for event in batch:
                    add(event)
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
            collected.usage_or_estimate(ticket.prompt_guess) if status != "upstream_error" else None
        )
        await gw.admissions.settle(
            ticket, usage, status, opened.provider.label, opened.upstream_model
        )
    assert usage is not None
    if route.finishes:
        try:  # before the body is rendered, so that the body can say what it did
            await route.finish(gw, ticket, decoded, collected)
        except Exception:
            # The answer is paid for: the client gets it (a 500 would make it retry and pay
            # again), as a stream's does (stream_answer's before_end); the route's last step is
            # lost.
            log.exception("answer %s: the route's last step failed", ticket.request_id)
    body = route.body(ticket, collected, usage, decoded)
    headers = [
        (b"content-type", JSON),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", ticket.request_id.encode()),
        (b"x-relaygate-upstream", opened.provider.label.encode()),
        (b"x-relaygate-model", ticket.model.name.encode()),
    ]
    # send_bytes' two messages, without its coroutine
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def now() -> int:
    """Unix seconds, for an answer's ``created``."""
    return int(time.time())
