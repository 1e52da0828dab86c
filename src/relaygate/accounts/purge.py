"""The periodic purge: expired console sessions and ended sign-in throttle windows.

Neither is needed for correctness (an expired session never verifies; an ended window counts
from zero again), but both tables would otherwise keep a row for every session ever opened and
every address and email ever tried. Every ``purge_interval_seconds`` each worker deletes what
has ended, first at start. Each pass is two ``DELETE ... WHERE`` statements on the ending
times: several workers or replicas running it at once delete each row once between them and
none of them anything still live, so no coordination is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from relaygate.settings import Settings
from relaygate.store import identity_sql
from relaygate.store.sql import SqlStore
from relaygate.tasks import stop_task

log = logging.getLogger("relaygate.accounts")

CLOSE_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Purged:
    sessions: int
    throttle_rows: int


async def purge_once(store: SqlStore, settings: Settings, *, now: int | None = None) -> Purged:
    """Delete the sessions past their absolute or idle end and the sign-in counts whose window
    has ended; how many of each."""
    moment = int(time.time()) if now is None else now
    sessions = await identity_sql.purge_sessions(store, moment)
    throttle_rows = await identity_sql.purge_attempts(
        store, moment, settings.sign_in_window_seconds
    )
    return Purged(sessions, throttle_rows)


class PeriodicPurge:
    """The background task of one worker: :func:`purge_once` every
    ``purge_interval_seconds``."""

    def __init__(self, store: SqlStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.passes = 0
        """Passes made (successful or not)."""
        self.passed = asyncio.Event()
        """Set after each pass (tests await it)."""
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="relaygate-purge")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task, self._stop, CLOSE_WAIT_SECONDS)

    async def run_once(self) -> Purged | None:
        """One pass; a failure (the store unreachable) is logged, with its traceback the first
        time, and the next pass tries again."""
        try:
            purged = await purge_once(self.store, self.settings)
        except Exception:
            log.warning("purge of expired sessions failed", exc_info=not self._failing)
            self._failing = True
            return None
        finally:
            self.passes += 1
            self.passed.set()
        if purged.sessions or purged.throttle_rows:
            log.info(
                "purged %d expired sessions and %d ended sign-in throttle windows",
                purged.sessions,
                purged.throttle_rows,
            )
        self._failing = False
        return purged

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.purge_interval_seconds)
