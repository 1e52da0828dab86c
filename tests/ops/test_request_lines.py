"""The request log's lines: one write per event-loop turn, in the handler's formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest

from relaygate.logs import RequestLines


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler() -> tuple[logging.StreamHandler[CountingStream], CountingStream]:
    stream = CountingStream()
    return logging.StreamHandler(stream), stream


async def test_the_lines_of_one_loop_turn_are_written_in_one_write() -> None:
    target, stream = handler()
    lines = RequestLines(target, json=False)
    for n in range(3):
        lines.write(f"request_id=r{n} status=200", None)
    assert stream.writes == 0  # not yet: at the end of this turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == 1
    text = stream.getvalue()
    assert text.endswith("\n")
    written = text.splitlines()
    assert [line.split(": ", 1)[1] for line in written] == [
        f"request_id=r{n} status=200" for n in range(3)
    ]
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO relaygate\.access: ")
    assert all(stamp.match(line) for line in written), written
    lines.write("request_id=r3 status=200", None)  # the next turn: a write of its own
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == 2


def test_outside_a_running_loop_a_line_is_written_at_once() -> None:
    target, stream = handler()
    lines = RequestLines(target, json=False)
    lines.write("status=400 error=invalid_request_error", None)
    assert stream.writes == 1
    assert stream.getvalue().endswith(
        " INFO relaygate.access: status=400 error=invalid_request_error\n"
    )


async def test_json_lines_carry_the_fields_and_flush_writes_what_is_pending() -> None:
    target, stream = handler()
    lines = RequestLines(target, json=True)
    lines.write("request", {"request_id": "r1", "status": 200, "stream": False})
    lines.flush()  # as at exit, before the loop's turn ends
    assert stream.writes == 1
    record = json.loads(stream.getvalue())
    assert record["level"] == "INFO"
    assert record["logger"] == "relaygate.access"
    assert record["message"] == "request"
    assert record["request_id"] == "r1"
    assert record["status"] == 200
    assert record["stream"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == 1  # the scheduled flush found nothing left


def test_the_running_loop_is_asked_for_once_not_per_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """``asyncio.get_running_loop()`` makes a ``getpid`` system call: the loop is remembered,
    and asked for again only when another loop runs (the lines still reach each one's turn)."""
    asked = []
    running = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        asked.append(1)
        return running()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    target, stream = handler()
    lines = RequestLines(target, json=False)

    async def turns() -> None:
        for n in range(3):
            lines.write(f"request_id=r{n} status=200", None)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    asyncio.run(turns())
    assert (len(asked), stream.writes) == (1, 3)
    asyncio.run(turns())  # a new loop in the same thread
    assert (len(asked), stream.writes) == (2, 6)
    assert len(stream.getvalue().splitlines()) == 6
