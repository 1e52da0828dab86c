"""The Redis gate's script calls, sent together: one pipeline per event-loop turn.

Every admission, settlement and cancellation is one Lua script (atomic in Redis on its own).
Those asked for in the same turn of the event loop go out in one pipeline: one write, one
round trip, for however many requests were ready, instead of one round trip each. A request
waits at most the rest of the current turn for its call to be sent.

Scripts are called by ``EVALSHA`` (the script's SHA1; hiredis packs the calls and parses the
replies). A Redis that
does not know a script (restarted, or flushed) answers ``NOSCRIPT`` to that call alone: it did
not run, so it is loaded and the call sent again. ``SCRIPT EXISTS`` is never asked (redis-py's
pipelined ``Script`` asks it before every pipeline: a second round trip).

A failed pipeline (connection lost, timeout) fails every call in it with the same exception,
each caller handling it as it handled its own failed call before: the scripts are idempotent
by request id where a resend could count twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Args = Sequence[str | int]


class Script:
    """One Lua script, by its SHA1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


_Call = tuple[Script, Args, Args, "asyncio.Future[Any]"]


class Batcher:
    """Collects script calls and sends each event-loop turn's in one pipeline."""

    def __init__(self, client: Any, timeout: float = 5.0) -> None:
        self.client = client
        self.timeout = timeout
        """Seconds for a pipeline's write and all its replies."""
        self._idle: list[Any] = []
        self.queue: list[_Call] = []
        self.round_trips = 0
        """Pipelines sent (a ``NOSCRIPT`` resend counts as another)."""
        self.calls = 0
        """Script calls sent."""
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, script: Script, keys: Args, args: Args) -> asyncio.Future[Any]:
        """The script's reply, once this turn's pipeline has been answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.queue:
            loop.call_soon(self._flush)
        self.queue.append((script, keys, args, future))
        return future

    def _flush(self) -> None:
        calls, self.queue = self.queue, []
        if not calls:  # sent already (by close)
            return
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self.run([(script, keys, args) for script, keys, args, _ in calls])
        except Exception as exc:
            for *_, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (closing): so are the calls
            for *_, future in calls:
                future.cancel()
            raise
        for (*_, future), reply in zip(calls, replies, strict=True):
            if future.done():  # its caller was cancelled: the script ran all the same
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def run(self, calls: Sequence[tuple[Script, Args, Args]]) -> list[Any]:
        """Send ``calls`` in one pipeline; each reply is a value or the call's own error."""
        replies = await self._pipeline(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # not run: load the scripts and send those calls again
            for script in {calls[i][0] for i in missing}:
                await self.client.script_load(script.source)
            again = await self._pipeline([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, calls: Sequence[tuple[Script, Args, Args]]) -> list[Any]:
        commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]
        self.round_trips += 1
        self.calls += len(calls)
        connection = self._idle.pop() if self._idle else await self._connection()
        try:
            try:
                return await self._exchange(connection, commands)
            except RedisConnectionError:
                # The connection failed (a pooled one to a restarted Redis): send once more, as
                # the client's own retry does. A timeout is not resent: the scripts may have run.
                await connection.disconnect()
                return await self._exchange(connection, commands)
        finally:
            # whole, or dropped by redis-py mid-way (it connects again when next used)
            self._idle.append(connection)

    async def _connection(self) -> Any:
        """A connection of the client's pool, kept for the batches: the timeout is the
        batch's as a whole (no timer task per write and per reply)."""
        connection = await self.client.connection_pool.get_connection()
        connection.socket_timeout = None
        return connection

    async def _exchange(self, connection: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` at once and read their replies, within the timeout (redis-py drops
        the connection on a timeout or an error mid-way: no reply is left unread on it)."""
        try:
            async with asyncio.timeout(self.timeout):
                await connection.send_packed_command(b"".join([pack_command(c) for c in commands]))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:  # this call's own error: the others stand
                        replies.append(exc)
                return replies
        except TimeoutError:
            raise RedisTimeoutError("Timeout waiting for Redis's replies") from None

    async def close(self) -> None:
        """Wait for the pipelines under way; give the connections back to the pool."""
        if self.queue:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        for connection in idle:
            await self.client.connection_pool.release(connection)
