"""The ASGI application: one :class:`Gateway` holding the app's parts, a route table, and a
lifespan that opens and drains them."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from relaygate.accounting.admission import Admissions
from relaygate.accounting.gate import Gate, MemoryGate
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.redis_gate import RedisGate
from relaygate.api import chat, info
from relaygate.api.http import Message, Receive, Scope, Send, send_error
from relaygate.errors import ApiError, InternalError, MethodNotAllowed, NotFound
from relaygate.keys.cache import KeyCache
from relaygate.media.pipeline import ImagePipeline
from relaygate.metrics import Metrics
from relaygate.protocol.render import sse_error
from relaygate.providers.registry import check_providers
from relaygate.routing.catalog import Catalog
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate")

Handler = Callable[["Gateway", Scope, Receive, Send], Awaitable[None]]

ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/chat/completions": {"POST": chat.chat_completions},
    "/v1/models": {"GET": info.list_models},
    "/v1/credits": {"GET": info.credits},
    "/health": {"GET": info.health},
    "/metrics": {"GET": info.metrics},
}


def make_gate(settings: Settings, metrics: Metrics, store: SqlStore) -> Gate:
    """Redis when ``redis_url`` is set (shared by every replica and worker), else in-process."""
    if settings.redis_url is None:
        return MemoryGate()
    return RedisGate(settings, metrics, store)


class Gateway:
    """Everything one worker needs to serve; built by :func:`create_app`, opened in the
    lifespan."""

    catalog: Catalog
    session: aiohttp.ClientSession

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SqlStore(settings.database_url)
        self.metrics = Metrics()
        self.gate = make_gate(settings, self.metrics, self.store)
        self.ledger = LedgerWriter(
            self.store,
            settings.ledger_flush_seconds,
            settings.ledger_batch_size,
            max_pending=settings.ledger_max_pending,
            spill_path=Path(settings.ledger_spill_path),
        )
        self.ledger.on_written = self.gate.ledger_written
        self.admissions = Admissions(self.gate, self.ledger)
        self.images = ImagePipeline(settings.images)
        self.keys = KeyCache(self.store, settings.key_refresh_seconds)
        self.keys.listeners.append(self.gate.key_changed)
        if isinstance(self.gate, RedisGate):
            self.gate.records = self.keys.by_id.get
        self.started_at = int(time.time())
        self.ready = False

    async def open(self) -> None:
        await self.store.upgrade()
        await self.ledger.start()
        await self.keys.refresh()
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        # No cookie jar: cookies an upstream sets must not ride along on other keys' requests
        # (and matching them costs every request).
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.catalog = Catalog(self.settings, self.session)
        self.keys.start()
        if isinstance(self.gate, RedisGate):
            self.gate.watch_key_changes(self.keys.refresh)
        gc.collect()
        gc.freeze()
        # Requests allocate many short-lived objects and few cycles: collect the young
        # generation less often (the default of 700 allocations costs ~5% of throughput).
        gc.set_threshold(10_000, 10, 10)
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.keys.close()
        await self.ledger.close()
        await self.gate.close()
        await self.images.close()
        await self.session.close()
        await self.store.close()


class _Tracked:
    """``send``, remembering how far the response got (for the last-resort error path)."""

    __slots__ = ("event_stream", "finished", "send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = self.finished = self.event_stream = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.event_stream = (b"content-type", b"text/event-stream") in [
                (k, v.split(b";")[0]) for k, v in message.get("headers", ())
            ]
        elif not message.get("more_body", False):
            self.finished = True
        await self.send(message)


class App:
    """The pure-ASGI application."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        path = scope["path"].rstrip("/") or "/"
        methods = ROUTES.get(path)
        send = _Tracked(send)
        try:
            if methods is None:
                raise NotFound(f"Unknown route: {scope['method']} {scope['path']}")
            handler = methods.get(scope["method"])
            if handler is None and scope["method"] == "HEAD":
                handler = methods.get("GET")  # the protocol sends the head only
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
            await send_error(send, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], path)
            error = InternalError("Internal server error")
            gw.metrics.responded(error.status, error.type)
            if not send.started:
                await send_error(send, error)
            elif not send.finished:
                # One response per request: end the one under way, with an SSE error event
                # when it is a stream (never a clean end).
                tail = sse_error(error) if send.event_stream else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
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
