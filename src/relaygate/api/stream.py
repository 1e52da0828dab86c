"""Streaming answers: SSE chunks, keep-alives before the first token, billing on disconnect.

When the client drops a stream, relaygate keeps reading the upstream (without sending) until its
usage arrives, for at most ``disconnect_drain_seconds``: the upstream has already been asked for
the whole answer and bills for what it generates, so the exact usage is what the key is charged.
If the upstream does not finish in time, the upstream connection is closed (which stops the
generation) and the key is charged the prompt estimate plus the tokens received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from relaygate.accounting.admission import Admissions, Ticket
from relaygate.api.http import Receive, Send
from relaygate.errors import InternalError, UpstreamError
from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.protocol.render import SSE_DONE, SSE_KEEPALIVE, sse_error
from relaygate.protocol.types import ChatRequest
from relaygate.providers.base import Event, Flush, TokenUsage
from relaygate.routing.router import Opened

log = logging.getLogger("relaygate.stream")


class ClientWatch:
    """Notices the client going away while the answer is being streamed."""

    def __init__(self, receive: Receive, deadline: asyncio.Timeout, drain_seconds: float) -> None:
        self.gone = False
        self._deadline = deadline
        self._drain = drain_seconds
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.mark_gone()
                return

    def mark_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._drain)

    def close(self) -> None:
        self._task.cancel()


async def _send(send: Send, watch: ClientWatch, data: bytes) -> None:
    if watch.gone:
        return
    try:
        await send({"type": "http.response.body", "body": data, "more_body": True})
    except OSError:
        watch.mark_gone()


async def _first_event(
    events: AsyncIterator[Event], interval: float, send: Send, watch: ClientWatch
) -> Event | None:
    """The next event, sending SSE comments every ``interval`` seconds while it is awaited."""
    task: asyncio.Future[Event] = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=interval)
            if done:
                return task.result()
            await _send(send, watch, SSE_KEEPALIVE)
    except StopAsyncIteration:
        return None
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))


async def stream_answer(
    admissions: Admissions,
    ticket: Ticket,
    opened: Opened,
    request: ChatRequest,
    send: Send,
    receive: Receive,
    keepalive_seconds: float,
    drain_seconds: float,
) -> None:
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    writer = ChunkWriter(ticket.request_id, ticket.model.name, int(time.time()))
    collected = Collected()
    status = "cancelled"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                (b"x-request-id", ticket.request_id.encode()),
                (b"x-relaygate-upstream", opened.provider.label.encode()),
            ],
        }
    )
    events = opened.events
    watch: ClientWatch | None = None
    try:
        async with asyncio.timeout(None) as deadline:
            watch = ClientWatch(receive, deadline, drain_seconds)
            tail = await _relay(
                events,
                writer,
                collected,
                send,
                watch,
                keepalive_seconds,
                opened.provider.batches,
            )
            status = "ok"
            if include_usage:
                tail.append(writer.usage(collected.usage_or_estimate(ticket.prompt_guess)))
            tail.append(SSE_DONE)
            await _send(send, watch, b"".join(tail))
    except UpstreamError as exc:
        status = "upstream_error"
        if watch is not None:
            await _send(send, watch, sse_error(exc))
    except TimeoutError:
        status = "client_disconnected"
    except Exception:
        log.exception("stream %s failed", ticket.request_id)
        status = "internal_error"
        if watch is not None:
            await _send(send, watch, sse_error(InternalError("Internal server error")))
    finally:
        gone = watch is not None and watch.gone
        if watch is not None:
            watch.close()
        try:
            await _close(events)
        finally:
            await _settle(admissions, ticket, opened, collected, status, gone)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay(
    events: AsyncIterator[Event],
    writer: ChunkWriter,
    collected: Collected,
    send: Send,
    watch: ClientWatch,
    keepalive_seconds: float,
    batches: bool,
) -> list[bytes]:
    """Relay events to the client until the upstream is done; returns output not sent yet.

    With a batching provider, output is gathered until its :class:`Flush` and written at once.
    """
    pending: list[bytes] = []
    first = await _first_event(events, keepalive_seconds, send, watch)
    if first is None:
        return pending
    async for event in _chain(first, events):
        if isinstance(event, Flush):
            if pending:
                await _send(send, watch, b"".join(pending))
                pending.clear()
            continue
        collected.add(event)
        if watch.gone:
            if isinstance(event, TokenUsage):
                break
            continue
        data = writer.event(event)
        if data is not None:
            if batches:
                pending.append(data)
            else:
                await _send(send, watch, data)
    return pending


async def _chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in rest:
        yield event


async def _close(events: AsyncIterator[Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def _settle(
    admissions: Admissions,
    ticket: Ticket,
    opened: Opened,
    collected: Collected,
    status: str,
    gone: bool,
) -> None:
    if gone and status == "ok":
        status = "client_disconnected"
    usage: TokenUsage = collected.usage_or_estimate(ticket.prompt_guess)
    await admissions.settle(ticket, usage, status, opened.provider.label, opened.upstream_model)
