"""A fake upstream base: a real aiohttp server on 127.0.0.1 in its own thread.

Each fake scripts its answers with a ``Reply`` per request (``script`` first, then ``default``)
and records what it received, so tests check both what relaygate answered and what it sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from aiohttp import web
from multidict import CIMultiDict

R = TypeVar("R")


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    """Looked up without regard to case, as HTTP names them."""
    body: dict[str, Any]


class ThreadedServer(Generic[R]):
    """Lifecycle, recording and scripting; subclasses add their routes in :meth:`routes`."""

    def __init__(self, default: R) -> None:
        self.default = default
        self.script: list[R] = []
        self.received: list[Received] = []
        self.problems: list[str] = []
        """Requests or answers that the vendor's SDK types reject (tests assert it is empty)."""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, default: R) -> None:
        self.default = default
        self.script.clear()
        self.received.clear()
        self.problems.clear()

    def next_reply(self) -> R:
        return self.script.pop(0) if self.script else self.default

    async def record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        headers = CIMultiDict(request.headers)
        self.received.append(Received(request.path, dict(request.query), headers, body))
        return body

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()


def split(text: str, parts: int) -> list[str]:
    """``text`` in about ``parts`` pieces (at least one piece, also for empty text)."""
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
