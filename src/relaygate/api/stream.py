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


WATCH_AFTER_SECONDS = 0.25
"""A stream starts watching for its client going away once it has run this long: shorter
streams finish (and are billed their exact usage) before a drop could change anything."""


class ClientWatch:
    """Notices the client going away while the answer is being streamed.

    The watching task is started lazily (after :data:`WATCH_AFTER_SECONDS`), so the many short
    streams cost no extra task.
    """

    def __init__(self, receive: Receive, deadline: asyncio.Timeout, drain_seconds: float) -> None:
        self.gone = False
        self._deadline = deadline
        self._drain = drain_seconds
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.mark_gone()
                return

    def mark_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._drain)

    def close(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def _send(send: Send, watch: ClientWatch, data: bytes) -> None:
    if watch.gone:
        return
    try:
        await send({"type": "http.response.body", "body": data, "more_body": True})
    except OSError:
        watch.mark_gone()


async def _keep_alive(interval: float, send: Send, watch: ClientWatch) -> None:
    while True:
        await _send(send, watch, SSE_KEEPALIVE)
        await asyncio.sleep(interval)


async def _first_event(
    events: AsyncIterator[Event], interval: float, send: Send, watch: ClientWatch
) -> Event | None:
    """The next event, sending SSE comments every ``interval`` seconds while it is awaited.

    The keep-alive task only starts if the first event is late; the await of the event itself
    stays in this task.
    """
    loop = asyncio.get_running_loop()
    keeper: list[asyncio.Task[None]] = []
    timer = loop.call_later(
        interval, lambda: keeper.append(loop.create_task(_keep_alive(interval, send, watch)))
    )
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    finally:
        timer.cancel()
        for task in keeper:
            task.cancel()
            await asyncio.wait((task,))


async def _start(send: Send, ticket: Ticket, opened: Opened) -> None:
    """The response head of a stream: 200, SSE, and who answered."""
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
                (b"x-relaygate-model", ticket.model.name.encode()),
            ],
        }
    )


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
    await _start(send, ticket, opened)
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
    After the client has gone, events are only collected (for billing) until the usage.
    """
    pending: list[bytes] = []
    event = await _first_event(events, keepalive_seconds, send, watch)
    if event is None:
        return pending
    while True:
        if type(event) is Flush:
            if pending:
                await _send(send, watch, b"".join(pending))
                pending.clear()
        else:
            collected.add(event)
            if watch.gone:
                if type(event) is TokenUsage:
                    return pending
            else:
                data = writer.event(event)
                if data is not None:
                    if batches:
                        pending.append(data)
                    else:
                        await _send(send, watch, data)
        try:
            event = await anext(events)
        except StopAsyncIteration:
            return pending


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
