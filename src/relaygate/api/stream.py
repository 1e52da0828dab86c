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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Protocol

from relaygate.accounting.admission import Admissions, Ticket
from relaygate.api.http import Message, Receive, Send
from relaygate.errors import ApiError, InternalError, UpstreamError
from relaygate.protocol.assemble import Collected
from relaygate.providers.base import Batch, Done, Event, TokenUsage
from relaygate.routing.router import Opened

log = logging.getLogger("relaygate.stream")


WATCH_AFTER_SECONDS = 0.25
"""A stream starts watching for its client going away once it has run this long: shorter
streams finish (and are billed their exact usage) before a drop could change anything."""


class StreamRenderer(Protocol):
    """A dialect's stream: the one event stream of the providers rendered as SSE bytes
    (:class:`relaygate.protocol.assemble.ChunkWriter` for chat completions)."""

    keepalive: bytes
    """Sent while the first event is awaited (a comment, or the dialect's ping)."""

    def event(self, event: Event) -> bytes | None:
        """The bytes for ``event``, or ``None`` when it sends nothing by itself."""

    def tail(self, collected: Collected, prompt_guess: int) -> list[bytes]:
        """What ends a complete stream."""

    def error(self, error: ApiError) -> bytes:
        """What ends a stream that failed after it started."""


class ClientWatch:
    """Notices the client going away while the answer is being streamed, and bounds the drain
    that follows.

    The watching task is started lazily (after :data:`WATCH_AFTER_SECONDS`), so the many short
    streams cost no extra task. Once the client is gone, the stream's task is cancelled when
    the drain time is up (:attr:`expired` tells that cancellation from any other); no
    ``asyncio.Timeout`` is entered for the many streams whose client stays.
    """

    def __init__(self, receive: Receive, drain_seconds: float) -> None:
        self.gone = False
        self.expired = False
        self._drain = drain_seconds
        self._receive = receive
        self._stream = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._loop = loop = asyncio.get_running_loop()
        self._timer = loop.call_later(WATCH_AFTER_SECONDS, self._start)
        self._expiry: asyncio.TimerHandle | None = None
        self._later: tuple[float, Callable[[], None]] | None = None
        """What :meth:`after` arms once the watch starts (its delay from then, and itself)."""
        self._later_timer: asyncio.TimerHandle | None = None

    def _start(self) -> None:
        self._task = self._loop.create_task(self._watch())
        later = self._later
        if later is not None:
            self._later = None
            self._later_timer = self._loop.call_later(*later)

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` about ``delay`` seconds after the watch began, unless
        :meth:`not_after` comes first (the keep-alive before a stream's first batch). One due
        after the watch starts is armed by the watch's own timer, when it fires: a stream that
        ends sooner, as most do, arms no second timer."""
        if delay < WATCH_AFTER_SECONDS or self._task is not None:
            self._later_timer = self._loop.call_later(delay, callback)
        else:
            self._later = (delay - WATCH_AFTER_SECONDS, callback)

    def not_after(self) -> None:
        """The callback of :meth:`after` is not wanted any more."""
        self._later = None
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.mark_gone()
                return

    def mark_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._expiry = self._loop.call_later(self._drain, self._expire)

    def _expire(self) -> None:
        if self._stream is not None:
            self.expired = True
            self._stream.cancel()

    def close(self) -> None:
        """Stop watching (before the stream's task awaits anything else).

        A stream that ended before the watch started looks once, without waiting, whether its
        client is already gone: a client that dropped it early is a disconnect, not ``ok``."""
        self._timer.cancel()
        if self._task is None and not self.gone:
            self._poll()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._task is not None:
            self._task.cancel()

    def _poll(self) -> None:
        """One step of ``receive()``: the server answers ``http.disconnect`` at once when the
        client has gone; anything that would wait means it has not (no task, no wait)."""
        step = self._receive()
        if not isinstance(step, Coroutine):
            return
        try:
            step.send(None)
        except StopIteration as done:
            if done.value["type"] == "http.disconnect":
                self.gone = True
        else:  # it waits: the client is still there
            step.close()

    def drained(self) -> bool:
        """Whether a cancellation of the stream's task was the end of the drain time (and
        nothing else): if so, it is taken back."""
        return self.expired and self._stream is not None and self._stream.uncancel() == 0


class _Client:
    """The client's side of a stream. Its head (200, SSE, who answered) is sent with the first
    bytes, so that the head and the first chunk leave in one write."""

    __slots__ = ("_head", "_send", "first", "keepalive", "watch")

    def __init__(self, send: Send, head: Message, watch: ClientWatch, keepalive: bytes) -> None:
        self.first = 0.0
        """When the first batch of the answer arrived (``perf_counter``)."""
        self._send = send
        self._head: Message | None = head
        self.watch = watch
        self.keepalive = keepalive

    async def write(self, data: bytes) -> None:
        if self.watch.gone:
            return
        try:
            if self._head is not None:  # (inline: a coroutine less per write)
                await self._send(self._head)
                self._head = None  # only once sent: a cancelled keep-alive may not have sent it
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except OSError:
            self.watch.mark_gone()

    async def end(self, data: bytes) -> None:
        """The last bytes, and the end of the response."""
        if self._head is not None:
            await self._send(self._head)
            self._head = None
        body = b"" if self.watch.gone else data
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


async def _keep_alive(interval: float, client: _Client) -> None:
    while True:
        await client.write(client.keepalive)
        await asyncio.sleep(interval)


async def _first_batch(
    events: AsyncIterator[Batch], interval: float, client: _Client
) -> Batch | None:
    """The next batch, sending SSE comments every ``interval`` seconds while it is awaited.

    The keep-alive task only starts if the first batch is late; the await of the batch itself
    stays in this task.
    """
    loop = asyncio.get_running_loop()
    keeper: list[asyncio.Task[None]] = []
    watch = client.watch
    watch.after(interval, lambda: keeper.append(loop.create_task(_keep_alive(interval, client))))
    try:
        return await anext(events, None)
    finally:
        watch.not_after()
        for task in keeper:
            task.cancel()
            await asyncio.wait((task,))


def _head(ticket: Ticket, opened: Opened) -> Message:
    """The response head of a stream: 200, SSE, and who answered."""
    return {
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


async def stream_answer(
    admissions: Admissions,
    ticket: Ticket,
    opened: Opened,
    writer: StreamRenderer,
    send: Send,
    receive: Receive,
    keepalive_seconds: float,
    drain_seconds: float,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Relay the answer; ``before_end`` (a route's, e.g. storing the answer) runs after a
    complete stream is settled and before its end reaches the client."""
    collected = Collected(image_tokens=ticket.image_tokens)
    status = "cancelled"
    events = opened.events
    client = _Client(
        send, _head(ticket, opened), ClientWatch(receive, drain_seconds), writer.keepalive
    )
    last = b""
    try:
        tail = await _relay(events, writer, collected, client, keepalive_seconds)
        status = "ok"
        tail += writer.tail(collected, ticket.prompt_guess)
        last = b"".join(tail)
    except UpstreamError as exc:
        status = "upstream_error"
        last = writer.error(exc)
        if ticket.access is not None:
            ticket.access.error = exc.type
    except asyncio.CancelledError:
        if not client.watch.drained():
            raise
        status = "client_disconnected"
    except Exception:
        log.exception("stream %s failed", ticket.request_id)
        status = "internal_error"
        last = writer.error(InternalError("Internal server error"))
    finally:
        client.watch.close()
        if ticket.access is not None:
            ticket.access.first_token = client.first
        try:
            await _close(events)
        finally:
            try:
                await _settle(admissions, ticket, opened, collected, status, client.watch.gone)
            except Exception:
                # The answer is complete: it still goes out; the failure is for the operator.
                log.exception("stream %s could not be settled", ticket.request_id)
    # Settled before the end reaches the client: a client that sends its next request as soon
    # as this one is complete sees its balance already charged.
    if before_end is not None and status == "ok" and not client.watch.gone:
        try:
            await before_end()
        except Exception:
            log.exception("stream %s: the route's last step failed", ticket.request_id)
    await client.end(last)


async def _relay(
    events: AsyncIterator[Batch],
    writer: StreamRenderer,
    collected: Collected,
    client: _Client,
    keepalive_seconds: float,
) -> list[bytes]:
    """Relay the upstream's answer to the client until it is done; returns output not sent yet.

    Each batch (one network read) is written in a single send, except the last one (ending in
    :class:`Done`), which is returned to go out with the stream's tail. After the client has
    gone, events are only collected (for billing) until the usage.
    """
    out: list[bytes] = []
    watch = client.watch
    batch = await _first_batch(events, keepalive_seconds, client)
    client.first = perf_counter()
    while batch is not None:
        if watch.gone:
            for event in batch:
                collected.add(event)
                if type(event) is TokenUsage and not event.partial:
                    return []
        else:
            for event in batch:
                collected.add(event)
                data = writer.event(event)
                if data is not None:
                    out.append(data)
            if out and type(batch[-1]) is not Done:
                await client.write(b"".join(out))
                out = []
        batch = await anext(events, None)
    return out


async def _close(events: AsyncIterator[Batch]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _settle(
    admissions: Admissions,
    ticket: Ticket,
    opened: Opened,
    collected: Collected,
    status: str,
    gone: bool,
) -> Awaitable[int]:
    """The settlement to await (not a coroutine of its own: one frame less per stream)."""
    if gone and status == "ok":
        status = "client_disconnected"
    usage: TokenUsage = collected.usage_or_estimate(ticket.prompt_guess)
    return admissions.settle(ticket, usage, status, opened.provider.label, opened.upstream_model)
