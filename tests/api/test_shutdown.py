"""SIGTERM with requests still running past ``shutdown_grace_seconds``: a stream ends with an
SSE error event, a non-stream gets the contract's 503, both rows are ``cancelled`` and billed
by the disconnect rule, and the log says so in one line."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from relaygate.providers.base import TokenUsage
from tests.api.test_stream import GPT52, data_of, events_of, guess_of, stream_body
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, ledger

CHAT = "/v1/chat/completions"


async def _post(
    session: aiohttp.ClientSession, gateway: GatewayProcess, key: str, body: dict[str, Any],
    first_chunk: asyncio.Event | None = None,
) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {key}"}
    async with session.post(gateway.url + CHAT, json=body, headers=headers) as resp:
        if first_chunk is None:
            return resp.status, await resp.read()
        raw = b""
        async for line in resp.content:
            raw += line
            if line.startswith(b"data: {"):
                first_chunk.set()
        return resp.status, raw


async def test_requests_past_the_grace_period_end_cleanly_and_are_billed_as_cancelled(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway(shutdown_grace_seconds=0.5)
    key = gateway.create_key("--credits", "10")
    stream, plain = stream_body("a long story"), {
        "model": "gpt-5.2", "messages": [{"role": "user", "content": "a long answer"}]}
    upstream.script = [
        Behavior(text="z" * 100, chunks=100, chunk_delay=0.1),  # 10 s: past the deadline
        Behavior(answer_delay=5),  # also past it
    ]
    first_chunk = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        streaming = asyncio.create_task(
            _post(session, gateway, key["key"], stream, first_chunk))
        await asyncio.wait_for(first_chunk.wait(), 30)
        waiting = asyncio.create_task(_post(session, gateway, key["key"], plain))
        async with asyncio.timeout(30):
            while len(upstream.received) < 2:
                await asyncio.sleep(0.02)  # until the non-stream has reached the upstream
        assert gateway.process is not None
        gateway.process.terminate()
        (stream_status, raw), (status, body) = await asyncio.gather(streaming, waiting)
    assert gateway.process.wait(30) in (0, -15)  # uvicorn raises the signal again at exit

    assert stream_status == 200
    data = data_of(events_of(raw))
    last = json.loads(data[-1][5:])
    assert set(last) == {"error"}, raw[-300:]
    assert last["error"]["type"] == "service_unavailable_error"
    assert b"[DONE]" not in raw

    assert status == 503, body
    assert json.loads(body)["error"]["type"] == "service_unavailable_error"

    logs = gateway.logs()
    assert logs.count("shutdown grace period (0.5 s) over: ending 2 requests") == 1, logs
    assert "Traceback" not in logs
    assert "CancelledError" not in logs
    assert "Cancel " not in logs  # uvicorn's own cancellation was not needed

    rows = {row["stream"]: row for row in ledger(gateway, key["id"])}
    assert {row["status"] for row in rows.values()} == {"cancelled"}
    streamed, answered = rows[1], rows[0]
    received = len(data) - 1
    assert 0 < streamed["completion_tokens"] <= received + 1
    assert streamed["prompt_tokens"] == guess_of(stream)
    assert streamed["cost_micros"] == GPT52.cost(TokenUsage(
        prompt_tokens=guess_of(stream), completion_tokens=streamed["completion_tokens"]))
    assert answered["prompt_tokens"] == guess_of(plain)
    assert answered["cost_micros"] == GPT52.cost(TokenUsage(prompt_tokens=guess_of(plain)))
    assert answered["cost_micros"] > 0


async def test_a_second_signal_ends_the_requests_at_once_and_their_rows_survive(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    """A second Ctrl-C (uvicorn's force exit skips the graceful wait and the lifespan
    shutdown): the stream ends with an SSE error event now, without a traceback, and its
    ``cancelled`` row, journaled, is written by the next start."""
    gateway = make_gateway(shutdown_grace_seconds=120)
    key = gateway.create_key("--credits", "10")
    stream = stream_body("a very long story")
    upstream.script = [Behavior(text="z" * 100, chunks=100, chunk_delay=1)]  # 100 s
    first_chunk = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    assert gateway.process is not None
    async with aiohttp.ClientSession(timeout=timeout) as session:
        streaming = asyncio.create_task(
            _post(session, gateway, key["key"], stream, first_chunk))
        await asyncio.wait_for(first_chunk.wait(), 30)
        gateway.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            while "Waiting for connections to close" not in gateway.logs():
                await asyncio.sleep(0.02)  # the first signal is being handled
        gateway.process.send_signal(signal.SIGINT)
        stream_status, raw = await streaming
    gateway.process.wait(30)
    assert stream_status == 200
    last = json.loads(data_of(events_of(raw))[-1][5:])
    assert set(last) == {"error"}, raw[-300:]
    logs = gateway.logs()
    assert "asked to stop again" in logs, logs
    assert "Traceback" not in logs, logs
    assert "CancelledError" not in logs, logs
    gateway.stop()  # closes its log (the process has exited)
    gateway.start()  # replays the journal
    rows = ledger(gateway, key["id"])
    assert [row["status"] for row in rows] == ["cancelled"]
    assert rows[0]["cost_micros"] > 0
