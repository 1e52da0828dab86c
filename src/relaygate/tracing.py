"""OpenTelemetry traces of model requests (``otel``; the optional ``relaygate[otel]`` extra).

Off by default, and then nothing of OpenTelemetry is imported: each hook on the request path
is one test of :data:`enabled`, a module attribute (``if tracing.enabled: tracing.begin(...)``).
On, every request to a model route is one trace, named and attributed after the GenAI semantic
conventions, exported over OTLP/HTTP (protobuf) by a batch span processor::

    chat gpt-5.2               SERVER    the request: model, key, usage, cost, status
    ├── relaygate.admission    INTERNAL  rate limits and the credit reservation
    ├── relaygate.images       INTERNAL  image fetches and checks (requests with images)
    ├── chat gpt-5.2           CLIENT    one per upstream attempt (retries and fallbacks too),
    │                                    until the upstream's answer has ended
    └── relaygate.settle       INTERNAL  the charge, the release, the ledger row

A request with a valid W3C ``traceparent`` header joins its caller's trace (and follows its
sampling decision); any other is drawn at ``sample_ratio`` before a span exists. Upstreams are
not sent a ``traceparent``: most are third-party APIs that report to nobody's collector. Spans
carry ids, names, counts and statuses: never a key, a prompt or an answer. A span still open
when its request ends (an error escaped) ends with that error.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, cast

from relaygate.errors import ApiError, ConfigError, UpstreamStatus
from relaygate.providers.base import Batch, Finish, TokenUsage

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from relaygate.accounting.admission import Ticket
    from relaygate.api.http import Message, Receive, Scope, Send
    from relaygate.protocol.types import ChatRequest
    from relaygate.providers.base import Provider, ProviderRequest
    from relaygate.routing.router import Opened
    from relaygate.settings import OtelSettings
    from relaygate.store.records import KeyRecord

log = logging.getLogger("relaygate.tracing")

enabled = False
"""Whether a gateway of this process traces: the request path's one check when it does not."""
_open = 0

OPERATION = "chat"
"""``gen_ai.operation.name`` of every model route (chat completions, Messages, Responses)."""
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
}
"""``gen_ai.provider.name`` of relaygate's providers (others: ``relaygate.<name>``)."""
MISSING_EXTRA = (
    "otel.enabled is set but OpenTelemetry is not installed: pip install 'relaygate[otel]'"
)

Handler = Callable[[Any, "Scope", "Receive", "Send"], Awaitable[None]]
H = TypeVar("H", bound=Handler)


class _Request:
    """The spans of one request being traced."""

    __slots__ = ("context", "error", "open", "span", "status", "tracer")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        from opentelemetry.trace import set_span_in_context

        self.tracer = tracer
        self.span = span
        self.context = set_span_in_context(span)
        self.open: dict[str, Span] = {}
        self.status = 0
        self.error: str | None = None
        """The error of an answer that failed after its status was sent (a stream)."""

    def begin(self, name: str, span_name: str, client: bool = False) -> Span:
        from opentelemetry.trace import SpanKind

        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        span = self.tracer.start_span(span_name, self.context, kind)
        self.open[name] = span
        return span

    def end(self, name: str, error: str | None = None) -> Span | None:
        span = self.open.pop(name, None)
        if span is not None:
            _end(span, error)
        return span

    def finish(self, error: str | None) -> None:
        for name in list(self.open):
            self.end(name, error)
        span = self.span
        if self.status:
            span.set_attribute("http.response.status_code", self.status)
        _end(span, error or self.error)


def _end(span: Span, error: str | None) -> None:
    if error is not None:
        from opentelemetry.trace import StatusCode

        span.set_attribute("error.type", error)
        span.set_status(StatusCode.ERROR)
    span.end()


_current: ContextVar[_Request | None] = ContextVar("relaygate_trace", default=None)
_random = random.Random()


class Tracing:
    """A gateway's tracer: checked at :func:`relaygate.app.create_app` (the extra installed),
    started in the lifespan (:meth:`open`), flushed at shutdown (:meth:`close`)."""

    def __init__(self, settings: OtelSettings) -> None:
        self.settings = settings
        try:
            import opentelemetry.exporter.otlp.proto.http.trace_exporter
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError:
            raise ConfigError(MISSING_EXTRA) from None
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None

    def open(self) -> None:
        """Start the exporter (its thread): in the worker, not in a process that forks."""
        global enabled, _open
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

        settings = self.settings
        version = _version()
        resource = Resource.create(
            {"service.version": version}
            | ({} if settings.service_name is None else {"service.name": settings.service_name})
        )
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "relaygate"}))
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, headers=dict(settings.headers) or None
        )
        # A request of its own is sampled by :meth:`serve` before any span exists (an unsampled
        # one costs next to nothing); one with a traceparent follows its caller's decision.
        sampler = ParentBased(ALWAYS_ON)
        self.provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("relaygate", version)
        _open += 1
        enabled = True

    async def close(self) -> None:
        """Export the spans still queued (in a thread: the export is a blocking POST)."""
        global enabled, _open
        provider, self.provider = self.provider, None
        if provider is None:
            return
        _open -= 1
        enabled = _open > 0
        await asyncio.to_thread(provider.shutdown)

    def routes(
        self, routes: Mapping[str, dict[str, H]], paths: frozenset[str]
    ) -> dict[str, dict[str, H]]:
        """``routes`` with the handlers of ``paths`` (the model routes) traced."""
        return {
            path: {m: self.traced(h) for m, h in methods.items()} if path in paths else methods
            for path, methods in routes.items()
        }

    def traced(self, handler: H) -> H:
        async def traced(gw: Any, scope: Scope, receive: Receive, send: Send) -> None:
            await self.serve(handler, gw, scope, receive, send)

        return cast(H, traced)

    async def serve(
        self, handler: Handler, gw: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run ``handler`` within the request's server span."""
        assert self.tracer is not None, "Tracing.open() was not called"
        parent = _parent(scope)
        if parent is None and _random.random() >= self.settings.sample_ratio:
            await handler(gw, scope, receive, send)  # not sampled: the hooks find no request
            return
        from opentelemetry.trace import SpanKind

        span = self.tracer.start_span(
            OPERATION,
            parent,
            SpanKind.SERVER,
            {
                "gen_ai.operation.name": OPERATION,
                "http.request.method": scope["method"],
                "url.path": scope["path"],
            },
        )
        if not span.is_recording():  # its caller did not sample it
            await handler(gw, scope, receive, send)
            return
        request = _Request(self.tracer, span)
        token = _current.set(request)

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
            await send(message)

        error: str | None = None
        try:
            await handler(gw, scope, receive, observed)
        except ApiError as exc:
            request.status, error = exc.status, exc.type
            raise
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception as exc:
            request.status, error = 500, type(exc).__qualname__
            raise
        finally:
            _current.reset(token)
            request.finish(error)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relaygate")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0"


def _parent(scope: Scope) -> Any:
    """The caller's trace context (W3C ``traceparent``, ``tracestate``), or ``None`` (also for
    a ``traceparent`` that is not valid)."""
    carrier = {}
    for name, value in scope["headers"]:
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    if "traceparent" not in carrier:
        return None
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract(carrier)
    return context if get_current_span(context).get_span_context().is_valid else None


# --- the hooks (each called only when ``enabled``) ---------------------------------------------


def authenticated(key: KeyRecord) -> None:
    """The request's key is known (its id and account; never the key)."""
    request = _current.get()
    if request is not None:
        request.span.set_attribute("relaygate.key_id", key.id)
        if key.account_id:
            request.span.set_attribute("relaygate.account_id", key.account_id)


def requested(api: str, request: ChatRequest) -> None:
    """The request is decoded and its model is one of the catalog's: the span's name."""
    current = _current.get()
    if current is None:
        return
    span = current.span
    span.update_name(f"{OPERATION} {request.model}")
    span.set_attributes(_request_attributes(request) | {"relaygate.api": api})


def _request_attributes(request: ChatRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.request.model": request.model,
        "gen_ai.request.stream": request.stream,
    }
    limit = request.max_completion_tokens or request.max_tokens
    if limit is not None:
        attributes["gen_ai.request.max_tokens"] = limit
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attributes["gen_ai.request.top_p"] = request.top_p
    return attributes


def begin(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Start the child span ``name`` (``relaygate.admission``, ``relaygate.images``)."""
    request = _current.get()
    if request is not None:
        span = request.begin(name, name)
        if attributes:
            span.set_attributes(attributes)


def end(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """End the child span ``name``; one an error escaped ends with the request."""
    request = _current.get()
    if request is not None:
        span = request.open.get(name)
        if span is not None and attributes:
            span.set_attributes(attributes)
        request.end(name)


def admitted(ticket: Ticket) -> None:
    """The request is admitted: the end of its admission span."""
    if ticket.output_limit is not None:
        end("relaygate.admission", {"relaygate.output_limit": ticket.output_limit})
    else:
        end("relaygate.admission")


def attempt(provider: Provider, model: str, call: ProviderRequest, tries: int) -> None:
    """An attempt on ``provider`` for ``model`` (a fallback when not the requested one) begins:
    ``tries`` is how many attempts this request made there before."""
    request = _current.get()
    if request is None:
        return
    upstream_model = provider.settings.model or model
    span = request.begin("attempt", f"{OPERATION} {upstream_model}", client=True)
    span.set_attributes(
        {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": provider_name(provider),
            "gen_ai.request.model": upstream_model,
            "relaygate.model": model,
            "relaygate.upstream": provider.label,
            "relaygate.attempt": tries + 1,
            "relaygate.retry": tries > 0,
            "relaygate.fallback": model != call.request.model,
        }
    )


def attempted(opened: Opened | None, error: Exception | None) -> None:
    """The attempt ended: failed (``error``), or the upstream accepted it and its answer is
    ``opened.events``, which the attempt's span now follows to their end."""
    request = _current.get()
    if request is None:
        return
    span = request.open.pop("attempt", None)
    if span is None:
        return
    if opened is None:
        if isinstance(error, UpstreamStatus):
            span.set_attribute("http.response.status_code", error.upstream_status)
            _end(span, str(error.upstream_status))
        else:
            _end(span, type(error).__name__ if error is not None else "failed")
        return
    span.set_attribute("http.response.status_code", 200)
    request.span.set_attributes(
        {
            "gen_ai.provider.name": provider_name(opened.provider),
            "relaygate.upstream": opened.provider.label,
        }
    )
    request.open["answer"] = span  # ended with the request at the latest
    opened.events = _Answer(opened.events, span, request)


def settled(ticket: Ticket, usage: TokenUsage, status: str, charged: int) -> None:
    """The request is settled: usage, cost and outcome on the request's span."""
    request = _current.get()
    if request is None:
        return
    request.span.set_attributes(
        {
            "gen_ai.response.id": ticket.request_id,
            "gen_ai.response.model": ticket.model.name,
            "relaygate.status": status,
            "relaygate.cost_micros": charged,
            **_usage(usage),
        }
    )
    request.end("relaygate.settle")
    if status in ("upstream_error", "internal_error"):
        request.error = status


def _usage(usage: TokenUsage) -> dict[str, int]:
    tokens = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }
    if usage.cached_tokens:
        tokens["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens:
        tokens["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return tokens


def provider_name(provider: Provider) -> str:
    return PROVIDER_NAMES.get(provider.name) or f"relaygate.{provider.name}"


class _Answer:
    """An upstream's answer, ending its attempt's span when it ends: complete, broken off by
    the upstream, or closed early (the client left). Usage and finish reasons go on the span."""

    __slots__ = ("_events", "_reasons", "_request", "_span", "_usage")

    def __init__(self, events: AsyncIterator[Batch], span: Span, request: _Request) -> None:
        self._events = events
        self._span: Span | None = span
        self._request = request
        self._usage: TokenUsage | None = None
        self._reasons: list[str] = []

    def __aiter__(self) -> _Answer:
        return self

    async def __anext__(self) -> Batch:
        try:
            batch = await self._events.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except ApiError as exc:
            self._end(exc.type)
            raise
        for event in batch:
            if type(event) is TokenUsage:
                self._usage = event
            elif type(event) is Finish:
                self._reasons.append(event.reason)
        return batch

    async def aclose(self) -> None:
        self._end(None)
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    def _end(self, error: str | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        self._request.open.pop("answer", None)
        if self._usage is not None:
            span.set_attributes(_usage(self._usage))
        if self._reasons:
            span.set_attribute("gen_ai.response.finish_reasons", self._reasons)
        _end(span, error)
