"""The client watch of a stream: the drain after a client leaves ends by cancelling the stream's
task, and only that cancellation is taken back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from relaygate.api.http import Message
from relaygate.api.stream import ClientWatch, _Client, _first_batch
from relaygate.providers.base import Batch, TextDelta


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _stream(watch_box: list[ClientWatch], drain: float, gone: bool) -> str:
    """A stand-in for ``stream_answer``: waits as a stream waits for its upstream."""
    watch = ClientWatch(_never, drain)
    watch_box.append(watch)
    if gone:
        watch.mark_gone()
    try:
        await asyncio.sleep(30)
        return "finished"
    except asyncio.CancelledError:
        if not watch.drained():
            raise
        return "drained"
    finally:
        watch.close()


async def test_the_drain_time_ends_the_stream() -> None:
    box: list[ClientWatch] = []
    assert await asyncio.wait_for(_stream(box, 0.05, gone=True), 10) == "drained"
    assert box[0].expired


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_drain() -> None:
    box: list[ClientWatch] = []
    task = asyncio.create_task(_stream(box, 30, gone=True))
    await asyncio.sleep(0)  # the stream reaches its wait
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done
    assert task.cancelled()
    assert not box[0].expired


async def test_a_cancellation_during_the_drain_still_cancels() -> None:
    box: list[ClientWatch] = []
    task = asyncio.create_task(_stream(box, 0.05, gone=True))
    await asyncio.sleep(0)  # the stream reaches its wait
    task.cancel()  # from elsewhere, before the drain time is up ...
    box[0]._expire()  # ... and the drain time ends in the same turn
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done
    assert task.cancelled()


async def test_a_client_that_stays_arms_no_drain() -> None:
    box: list[ClientWatch] = []
    task = asyncio.create_task(_stream(box, 0.01, gone=False))
    await asyncio.sleep(0.1)
    assert not task.done()
    assert not box[0].expired
    task.cancel()
    await asyncio.wait({task}, timeout=10)


async def _gone() -> Message:
    return {"type": "http.disconnect"}


async def test_a_stream_that_ends_before_the_watch_starts_still_sees_its_client_gone() -> None:
    """The watch starts after WATCH_AFTER_SECONDS; a client that left a shorter stream was
    missed, and the stream recorded as ``ok``."""
    watch = ClientWatch(_gone, 30)
    watch.close()
    assert watch.gone
    assert not watch.expired


async def test_a_stream_that_ends_before_the_watch_starts_with_its_client_there() -> None:
    watch = ClientWatch(_never, 30)
    watch.close()
    assert not watch.gone


async def _first_batch_with(interval: float, arrives: asyncio.Event | None) -> list[Message]:
    """``_first_batch`` of a stream whose first batch comes once a keep-alive was sent (or, with
    ``arrives`` given, once that event is set); the messages its client was sent."""
    sent: list[Message] = []
    kept = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body") == b": ka\n\n":
            kept.set()

    async def events() -> AsyncIterator[Batch]:
        await (arrives or kept).wait()
        yield [TextDelta("x")]

    watch = ClientWatch(_never, 30)
    client = _Client(send, {"type": "http.response.start", "status": 200}, watch, b": ka\n\n")
    try:
        batch = await asyncio.wait_for(_first_batch(events(), interval, client), 10)
    finally:
        watch.close()
    assert batch == [TextDelta("x")]
    return sent


async def test_a_keepalive_due_after_the_watch_starts_is_sent_while_the_batch_waits() -> None:
    # 0.3 s is after the watch starts (WATCH_AFTER_SECONDS): the watch's timer arms it
    sent = await _first_batch_with(0.3, None)
    assert [m["type"] for m in sent[:2]] == ["http.response.start", "http.response.body"]


async def test_a_keepalive_due_before_the_watch_starts_is_sent_while_the_batch_waits() -> (
    None
):
    sent = await _first_batch_with(0.01, None)
    assert [m["type"] for m in sent[:2]] == ["http.response.start", "http.response.body"]


async def test_a_first_batch_in_time_sends_no_keepalive() -> None:
    ready = asyncio.Event()
    ready.set()
    assert await _first_batch_with(0.3, ready) == []
