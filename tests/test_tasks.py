"""Stopping tasks whose cancellation was lost (Python 3.11's ``wait_for``, under redis-py)."""

from __future__ import annotations

import asyncio
import contextlib

from relaygate.tasks import cancel_and_wait, stop_task


async def _loses_its_first_cancel(ended: list[str]) -> None:
    """What a loop does when a library swallowed its cancel: carries on, then sleeps again."""
    # as wait_for does when the inner call completes as the cancel arrives
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append("ended")


async def test_a_task_that_lost_its_cancel_is_cancelled_again() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_loses_its_first_cancel(ended))
    await asyncio.sleep(0)  # it is waiting
    async with asyncio.timeout(60):  # a hang fails here, not at pytest's timeout
        await cancel_and_wait([task])
    assert task.cancelled()
    assert ended == ["ended"]


async def test_tasks_already_done_and_ordinary_ones_end_at_once() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    sleeper = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait([done, sleeper])
    assert sleeper.cancelled()
    assert not done.cancelled()


async def test_a_loop_that_ignores_its_stop_is_cancelled_until_it_ends() -> None:
    stop = asyncio.Event()
    ended: list[str] = []
    task = asyncio.create_task(_loses_its_first_cancel(ended))
    await asyncio.sleep(0)
    async with asyncio.timeout(60):
        await stop_task(task, stop, grace=0)
    assert stop.is_set()
    assert task.cancelled()
    assert ended == ["ended"]


async def test_a_loop_that_stops_when_asked_is_not_cancelled() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(stop.wait())
    await asyncio.sleep(0)
    async with asyncio.timeout(60):
        await stop_task(task, stop, grace=60)
    assert task.done()
    assert not task.cancelled()
