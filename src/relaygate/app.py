"""The ASGI application: one :class:`Gateway` holding the app's parts, a route table, and a
lifespan that opens and drains them."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from relaygate import admin, console
from relaygate.access import SCOPE_KEY as ACCESS_SCOPE
from relaygate.access import UNLOGGED, Access, RequestLog, client_text
from relaygate.accounting.admission import Admissions
from relaygate.accounting.gate import Gate, MemoryGate
from relaygate.accounting.journal import Journal
from relaygate.accounting.journal_format import store_fingerprint
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.redis_gate import RedisGate
from relaygate.accounts.alerts import LowBalanceAlerts
from relaygate.accounts.purge import PeriodicPurge
from relaygate.admin.ratelimit import AdminRateLimit
from relaygate.api import chat, info, messages, responses
from relaygate.api.cors import PREFIX as CORS_PREFIX
from relaygate.api.cors import Cors
from relaygate.api.http import Message, Receive, Scope, Send, header, send_error
from relaygate.console.table import ROUTER as CONSOLE_ROUTER
from relaygate.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    excerpt,
)
from relaygate.keys.cache import KeyCache
from relaygate.media.pipeline import ImagePipeline
from relaygate.metrics import Metrics
from relaygate.protocol.render import CONTRACT, ErrorShape
from relaygate.providers.registry import check_providers
from relaygate.routing.catalog import Catalog
from relaygate.settings import Settings, unserved_models
from relaygate.store.responses_sql import ResponseStore
from relaygate.store.sql import SqlStore
from relaygate.tracing import Tracing
from relaygate.upstream_http import UpstreamClient

log = logging.getLogger("relaygate")

Handler = Callable[["Gateway", Scope, Receive, Send], Awaitable[None]]

ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/chat/completions": {"POST": chat.chat_completions},
    "/v1/models": {"GET": info.list_models},
    "/v1/messages": {"POST": messages.messages},
    "/v1/messages/count_tokens": {"POST": messages.count_tokens},
    "/v1/responses": {"POST": responses.responses},
    "/v1/credits": {"GET": info.credits},
    "/health": {"GET": info.health},
    "/health/details": {"GET": info.health_details},
    "/metrics": {"GET": info.metrics},
}


TRACED = frozenset({"/v1/chat/completions", "/v1/messages", "/v1/responses"})
"""The model routes, traced when ``otel.enabled`` (a server span each)."""

CONSOLE = console.PREFIX + "/"


SHAPES: dict[str, ErrorShape] = {
    "/v1/messages": messages.MESSAGES.shape,
    "/v1/messages/count_tokens": messages.MESSAGES.shape,
}
"""Routes whose errors are not in the contract's shape (by path)."""

MODEL_PREFIX = "/v1/models/"
"""``GET /v1/models/{id}``: the one route with a parameter in its path."""

CLOSE_WAIT_SECONDS = 3.0
"""At shutdown, how long the requests still running may take to settle before the ledger
closes (they were cancelled: settling takes a Redis round trip at most)."""


def make_gate(settings: Settings, metrics: Metrics, store: SqlStore) -> Gate:
    """Redis when ``redis_url`` is set (shared by every replica and worker), else in-process."""
    if settings.redis_url is None:
        return MemoryGate()
    return RedisGate(settings, metrics, store)


def _billing_url(settings: Settings) -> str | None:
    """The 402's link: ``billing_url``, else the console's billing page when the console is
    on and the public URL is known."""
    if settings.billing_url is not None:
        return settings.billing_url
    if settings.console and settings.public_url is not None:
        return console.billing_url(settings.public_url)
    return None


class Gateway:
    """Everything one worker needs to serve; built by :func:`create_app`, opened in the
    lifespan."""

    catalog: Catalog
    upstreams: UpstreamClient
    """The providers' HTTP client (keep-alive pools to every upstream)."""
    webhooks: aiohttp.ClientSession
    """The alert webhooks' HTTP session (off the request path, so aiohttp's)."""
    alerts: LowBalanceAlerts

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracing = Tracing(settings.otel) if settings.otel.enabled else None
        self.routes = ROUTES if self.tracing is None else self.tracing.routes(ROUTES, TRACED)
        """The route table (the model routes' handlers traced when tracing is on)."""
        self.cors = Cors(settings.cors_allowed_origins) if settings.cors_allowed_origins else None
        self.unserved = frozenset(unserved_models(settings))
        """Models with no upstream (nor a fallback that has one): left out of /v1/models."""
        self.store = SqlStore(settings.database_url)
        self.metrics = Metrics()
        self.request_log = RequestLog(
            self.metrics, settings.request_log, json=settings.log_format == "json"
        )
        self.gate = make_gate(settings, self.metrics, self.store)
        self.ledger = LedgerWriter(
            self.store,
            settings.ledger_flush_seconds,
            settings.ledger_batch_size,
            max_pending=settings.ledger_max_pending,
            spill_path=Path(settings.ledger_spill_path),
            journal=Journal(
                Path(settings.journal_path),
                settings.journal_fsync,
                store=store_fingerprint(settings.database_url),
            ),
        )
        self.ledger.on_written = self.gate.ledger_written
        self.admissions = Admissions(
            self.gate,
            self.ledger,
            billing_url=_billing_url(settings),
            clamp_min_output_tokens=(
                settings.clamp_min_output_tokens if settings.clamp_output_to_balance else None
            ),
        )
        self.images = ImagePipeline(settings.images)
        self.admin_limit = AdminRateLimit(
            settings.admin_rate_limit_per_minute,
            self.gate.client if isinstance(self.gate, RedisGate) else None,
            settings.redis_key_prefix,
        )
        self.purge = PeriodicPurge(self.store, settings)
        self.responses = (
            ResponseStore(self.store, settings.stored_response_seconds)
            if settings.stored_responses
            else None
        )
        """Stored answers of ``POST /v1/responses`` (``stored_responses``), or ``None``."""
        self.keys = KeyCache(self.store, settings.key_refresh_seconds)
        self.keys.listeners.append(self.gate.key_changed)
        self.keys.account_listeners.append(self.gate.account_changed)
        if isinstance(self.gate, RedisGate):
            self.gate.records = self.keys.by_id.get
        self.gate.accounts = self.keys.accounts.get
        self.started_at = int(time.time())
        self.ready = False
        self.requests: set[asyncio.Task[Any]] = set()
        """The tasks of the requests being served (ended by the shutdown deadline)."""
        self._deadline: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        if self.tracing is not None:
            self.tracing.open()
        if self.settings.console:
            console.prepare()
        applied = await self.store.upgrade()
        log.debug("store %s: migrations applied now: %s", self.store.describe(), applied or "none")
        await self.ledger.start()
        await self.keys.refresh()
        log.debug("key cache: %d keys loaded", len(self.keys.by_id))
        # No cookies, proxies from the environment or redirects: cookies an upstream sets must
        # not ride along on other keys' requests.
        self.upstreams = UpstreamClient()
        self.webhooks = aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        self.catalog = Catalog(self.settings, self.upstreams)
        for name, model in self.catalog.models.items():
            labels = ", ".join(p.label for p in model.upstreams) or "none"
            log.debug("model %s: upstreams %s", name, labels)
        self.alerts = LowBalanceAlerts(self.store, self.webhooks, self.settings)
        self.alerts.start()
        self.purge.start()
        self.metrics.start()
        self.keys.start()
        self._watch_stop_signals()
        if isinstance(self.gate, RedisGate):
            self.gate.watch_key_changes(self.keys.refresh)
        gc.collect()
        gc.freeze()
        # Requests allocate many short-lived objects and few cycles: collect the young
        # generation less often (the default of 700 allocations costs ~5% of throughput).
        gc.set_threshold(10_000, 10, 10)
        self.ready = True

    def _watch_stop_signals(self) -> None:
        """Start the shutdown deadline when the server is asked to stop.

        uvicorn's handlers (installed before the lifespan starts) stay in charge of the graceful
        shutdown; each is wrapped to also arm :meth:`_end_requests` after
        ``shutdown_grace_seconds``, before uvicorn's own timeout would cancel the tasks."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def handler(
                number: int, frame: object, previous: Callable[..., object] = previous
            ) -> None:
                previous(number, frame)
                loop.call_soon_threadsafe(self.stopping)

            signal.signal(signum, handler)

    def stopping(self) -> None:
        """The server was asked to stop: requests still running at the deadline are ended.

        Asked again (a second Ctrl-C: uvicorn's force exit skips the graceful wait and the
        lifespan shutdown), they are ended now, each with its 503 or SSE error event and its
        ``cancelled`` row in the journal, which the next start writes."""
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            grace = self.settings.shutdown_grace_seconds
            self._deadline = loop.call_later(grace, self._end_requests)
        elif not self.admissions.deadline_passed:
            self._deadline.cancel()
            log.warning("asked to stop again: not waiting for the grace period")
            self._end_requests()

    def _end_requests(self) -> None:
        if not self.requests:
            return
        self.admissions.deadline_passed = True
        log.warning(
            "shutdown grace period (%g s) over: ending %d requests in flight (streams with an"
            " SSE error event, others with 503; billed as cancelled)",
            self.settings.shutdown_grace_seconds,
            len(self.requests),
        )
        for task in self.requests:
            task.cancel()

    async def close(self) -> None:
        self.ready = False
        log.debug("shutting down: %d requests still running", len(self.requests))
        if self._deadline is not None:
            self._deadline.cancel()
        await self._wait_for_requests()
        await self.alerts.close()
        await self.purge.close()
        await self.keys.close()
        await self.ledger.close()
        await self.gate.close()
        await self.images.close()
        await self.upstreams.close()
        await self.webhooks.close()
        await self.store.close()
        self.metrics.close()
        if self.tracing is not None:
            await self.tracing.close()  # the spans still queued are exported

    async def _wait_for_requests(self) -> None:
        """Let the requests still running settle before the ledger closes: uvicorn's backstop
        cancels them and runs the lifespan shutdown without waiting for them to end."""
        running = {task for task in self.requests if not task.done()}
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=CLOSE_WAIT_SECONDS)
        if late:
            log.error(
                "%d requests still running %g s after the shutdown began: their rows are not"
                " in the ledger; the next start charges their prompt estimate",
                len(late),
                CLOSE_WAIT_SECONDS,
            )


class _Tracked:
    """``send``, remembering how far the response got (for the last-resort error path).

    Not a coroutine of its own: the bookkeeping is done when it is called, and the server's
    ``send`` is what the caller awaits (one coroutine a message, not two)."""

    __slots__ = ("finished", "headers", "send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = self.finished = False
        self.status = 0
        self.headers: Iterable[tuple[bytes, bytes]] = ()
        """The response's headers, once started."""

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", ())
        elif not message.get("more_body", False):
            self.finished = True
        return self.send(message)

    @property
    def event_stream(self) -> bool:
        """Whether the response under way is an event stream (looked at only by the error
        path, not for every response)."""
        return (b"content-type", b"text/event-stream") in [
            (k, v.split(b";")[0]) for k, v in self.headers
        ]


def is_preflight(gw: Gateway, scope: Scope, path: str) -> bool:
    """A browser's CORS preflight of the API (answered only when CORS is on)."""
    return (
        gw.cors is not None
        and scope["method"] == "OPTIONS"
        and path.startswith(CORS_PREFIX)
        and header(scope, b"access-control-request-method") is not None
    )


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _end_at_deadline(
    gw: Gateway, send: _Tracked, shape: ErrorShape, access: Access | None
) -> None:
    """End a request cut by the shutdown deadline: 503, or an SSE error event when its stream
    has started (never a truncated body). Its row was settled as ``cancelled``."""
    error = ServiceUnavailable(
        "Service unavailable: the server is shutting down and this request ran past its grace"
        " period"
    )
    await _end_with(gw, send, error, shape, access)


async def _end_with(
    gw: Gateway, send: _Tracked, error: ApiError, shape: ErrorShape, access: Access | None
) -> None:
    """Answer ``error``, or end the response under way with it: one response per request, and
    a stream ends with an SSE error event (never a clean end)."""
    gw.metrics.responded(error.status, error.type)
    if access is not None:
        access.error = error.type
    if not send.started:
        await send_error(send, error, shape)
    elif not send.finished:
        tail = shape.sse(error) if send.event_stream else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})


class App:
    """The pure-ASGI application."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            requests = self.gateway.requests
            task = asyncio.current_task()
            requests.add(task)  # type: ignore[arg-type]
            try:
                await self._http(scope, receive, send)
            finally:
                requests.discard(task)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        path = scope["path"].rstrip("/") or "/"
        methods = gw.routes.get(path)
        if gw.cors is not None and path.startswith(CORS_PREFIX):
            origin = header(scope, b"origin")
            if origin is not None and gw.cors.allowed(origin):
                send = gw.cors.wrap(send, origin)
        send = _Tracked(send)
        access: Access | None = None
        try:
            if methods is None and gw.settings.console and (path + "/").startswith(CONSOLE):
                gw.metrics.responded(await CONSOLE_ROUTER.dispatch(gw, scope, receive, send))
                return
            if methods is None and (path + "/").startswith(admin.PREFIX + "/"):
                gw.metrics.responded(await admin.ROUTER.dispatch(gw, scope, receive, send))
                return
            if path not in UNLOGGED:
                access = scope[ACCESS_SCOPE] = Access(scope["method"], path)
            if methods is None and path.startswith(MODEL_PREFIX):
                methods = {"GET": info.retrieve_model}
            if methods is None and path.startswith(responses.PREFIX):
                methods = {"GET": responses.retrieve, "DELETE": responses.delete}
            if methods is None:
                if access is not None:
                    access.path = client_text(path)
                raise NotFound(f"Unknown route: {scope['method']} {excerpt(scope['path'])}")
            handler = methods.get(scope["method"])
            if handler is None and scope["method"] == "HEAD":
                handler = methods.get("GET")  # the protocol sends the head only
            if handler is None and is_preflight(gw, scope, path):
                assert gw.cors is not None
                await gw.cors.preflight(scope, send, list(methods))
                gw.metrics.responded(204)
                return
            if handler is None:
                allow = [*methods, "HEAD"] if "GET" in methods else list(methods)
                raise MethodNotAllowed(
                    f"Method {scope['method'][:16]} is not allowed on {path}"
                    f" (use {', '.join(allow)})",
                    allow=allow,
                )
            await handler(gw, scope, receive, send)
            gw.metrics.responded(200)
        except ApiError as exc:
            gw.metrics.responded(exc.status, exc.type)
            if access is not None:
                access.error = exc.type
            await send_error(send, exc, SHAPES.get(path, CONTRACT))
        except asyncio.CancelledError:
            if not gw.admissions.deadline_passed:
                raise
            _uncancel()
            await _end_at_deadline(gw, send, SHAPES.get(path, CONTRACT), access)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], path)
            error = InternalError("Internal server error")
            await _end_with(gw, send, error, SHAPES.get(path, CONTRACT), access)
        finally:
            if access is not None:
                gw.request_log.done(access, send.status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:
                # uvicorn's force exit (a second Ctrl-C) skips the lifespan shutdown and cancels
                # this task as the loop ends: a line, not a traceback.
                log.warning(
                    "forced exit: ledger rows not yet in the store stay in the journal; the next"
                    " start writes them"
                )
                return
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.open()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, source: str = "(settings)") -> App:
    """The ASGI app for ``settings``."""
    check_providers(settings, source)
    return App(Gateway(settings))
