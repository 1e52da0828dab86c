"""How many requests a per-minute limit lets through a burst, whatever the machine's speed."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def timed(work: Awaitable[T]) -> tuple[T, float]:
    """``work``'s result and the seconds it took."""
    start = time.monotonic()
    result = await work
    return result, time.monotonic() - start


def burst_allowance(rpm: int, elapsed: float) -> int:
    """The most requests a limit of ``rpm`` may admit in a burst that lasted ``elapsed``
    seconds: the burst itself, plus one for every ``60 / rpm`` seconds it refilled meanwhile
    (on a fast machine the burst takes well under one refill, and this is exactly ``rpm``)."""
    return rpm + int(elapsed * rpm / 60)
