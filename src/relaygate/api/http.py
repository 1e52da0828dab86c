"""Pure-ASGI helpers: headers, bodies, JSON and error responses (no framework on the hot path)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from relaygate.errors import ApiError, InvalidRequest, RateLimited, RequestTooLarge, ServerBusy
from relaygate.protocol.render import CONTRACT, ErrorShape

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class BodyBudget:
    """The request bodies in flight in this process: their bytes, and how many each key has.

    A request's share is taken before its body is read and given back when the request's task
    ends (its body lives as long as the request does), so that memory is bounded before any
    other limit is checked.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.per_key: dict[str, int] = {}

    def enter(self, key_id: str, slots: int | None) -> _Share:
        count = self.per_key.get(key_id, 0)
        if slots is not None and count >= slots:
            raise RateLimited(
                f"Rate limit exceeded: this key allows {slots} concurrent requests",
                retry_after=1,
            )
        self.per_key[key_id] = count + 1
        share = _Share(self, key_id)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(share.release)
        return share

    def hold(self, size: int, limit: int) -> None:
        """Hold ``size`` more bytes for the current request until its task ends (what it reads
        besides its body: a stored conversation it continues), or raise 503 when the process
        cannot. No key slot is taken (the request's admission holds one)."""
        share = _Share(self, None)
        share.grow(size, limit)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(share.release)


class _Share:
    """One request's part of the :class:`BodyBudget` (``key_id``: ``None`` for bytes alone)."""

    __slots__ = ("budget", "bytes", "key_id")

    def __init__(self, budget: BodyBudget, key_id: str | None) -> None:
        self.budget = budget
        self.key_id = key_id
        self.bytes = 0

    def grow(self, size: int, limit: int) -> None:
        """Hold ``size`` bytes in all, or raise 503 when the process cannot."""
        more = size - self.bytes
        if more > 0:
            if self.budget.bytes + more > limit:
                raise ServerBusy(
                    "The server has too many request bodies in flight: retry shortly",
                    retry_after=1,
                )
            self.budget.bytes += more
            self.bytes = size

    def release(self, _: object = None) -> None:
        budget = self.budget
        budget.bytes -= self.bytes
        self.bytes = 0
        if self.key_id is None:
            return
        count = budget.per_key.pop(self.key_id, 1) - 1
        if count > 0:
            budget.per_key[self.key_id] = count


BODIES = BodyBudget()
"""The process's request bodies in flight."""


SMALL_BODY = 64 * 1024
"""A body declared at most this long takes no share of :data:`BODIES`: all of them together
are bounded by the connections a process accepts, and taking a share costs every request."""


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    key_id: str = "",
    key_slots: int | None = None,
    in_flight_limit: int | None = None,
) -> bytes:
    """The whole request body, or 413 once it passes ``limit`` bytes.

    With ``in_flight_limit``, a body over :data:`SMALL_BODY` (or of unknown length) takes its
    share of :data:`BODIES` first: one of the key's ``key_slots`` (429 when it has that many
    such bodies in flight), then its bytes among all the process's as they arrive (503 when they
    would pass ``in_flight_limit``: a declared length reserves nothing, so that a body sent one
    byte at a time holds only what it has sent).
    """
    declared = header(scope, b"content-length")
    length = int(declared) if declared is not None and declared.isdigit() else -1
    if length > limit:
        raise RequestTooLarge(f"Request body too large: at most {limit} bytes are accepted")
    share = None
    if in_flight_limit is not None and not 0 <= length <= SMALL_BODY:
        share = BODIES.enter(key_id, key_slots)  # its bytes as they arrive, not as declared
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client went away before its request body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"Request body too large: at most {limit} bytes are accepted")
        if share is not None and size > share.bytes:
            share.grow(size, in_flight_limit)  # type: ignore[arg-type]
        if not message.get("more_body", False):
            if not chunks and type(chunk) is bytes:
                return chunk  # the whole body in one message (the usual case): no join
            chunks.append(chunk)
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Headers | None = None,
) -> None:
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


_SHOULD_RETRY = {True: (b"x-should-retry", b"true"), False: (b"x-should-retry", b"false")}


async def send_error(send: Send, error: ApiError, shape: ErrorShape = CONTRACT) -> None:
    status, body, headers = shape.response(error)
    hint = error.retry_hint()
    if hint is not None:
        headers = [*headers, _SHOULD_RETRY[hint]]
    await send_bytes(send, status, body, headers=headers)
