"""The coalescing transport under relaygate's HTTP protocol: one write per event-loop turn."""

from __future__ import annotations

import asyncio
from typing import Any

from relaygate.serving import CoalescingTransport


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_reach_the_socket_as_one() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.writelines([b"he", b"llo"])
    assert raw.writes == []
    await next_turn()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
    transport.write(b"next")
    await next_turn()
    assert raw.writes[1:] == [b"next"]


async def test_close_writes_what_is_pending_first() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert raw.writes == [b"last words"]
    assert raw.closed
    await next_turn()  # the scheduled flush finds nothing more to write
    assert raw.writes == [b"last words"]


async def test_abort_drops_what_is_pending() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"never")
    transport.abort()
    await next_turn()
    assert raw.writes == []
    assert raw.aborted


async def test_nothing_is_written_to_a_transport_closed_meanwhile() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"too late")
    raw.close()  # the connection went away before the next turn
    await next_turn()
    assert raw.writes == []


async def test_a_large_write_goes_out_at_once_and_buffers_are_copied() -> None:
    raw = Recorder()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    buffer = bytearray(b"head")
    transport.write(buffer)
    buffer[:] = b"XXXX"  # the caller reuses its buffer
    transport.write(b"x" * 70_000)
    assert raw.writes == [b"head" + b"x" * 70_000]
    await next_turn()
    assert len(raw.writes) == 1
