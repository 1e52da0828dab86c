"""The streaming hot path measured in-process: CPU per stream, with no network and no noise
from other processes.

    python -m bench.stream_path [--streams 2000] [--repeats 9]

It feeds the mock upstream's streamed answer (20 content chunks, a finish chunk, a usage chunk
and ``[DONE]``, in one network read) through the OpenAI provider's stream loop and relaygate's
chunk writer, as one stream of the gateway does, and prints the best of ``--repeats`` timings of
``--streams`` streams. On a shared machine the best of several repeats is the steadiest figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.mock_upstream import _stream
from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import ProviderRequest
from relaygate.providers.openai import OpenAIProvider
from relaygate.settings import UpstreamSettings


def _sse_body() -> bytes:
    """The mock's streamed body, without its HTTP head and chunked framing."""
    raw = _stream()
    body = raw[raw.index(b"\r\n\r\n") + 4 :]
    return body[body.index(b"\r\n") + 2 : body.rindex(b"\r\n0\r\n")]


class _Content:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self.body


class _Response:
    def __init__(self, body: bytes) -> None:
        self.content = _Content(body)

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Provider(OpenAIProvider):
    """The OpenAI provider with the HTTP call replaced by the recorded answer."""

    body_bytes = b""

    async def _open(self, request: ProviderRequest) -> Any:
        return _Response(self.body_bytes)


async def _one(provider: _Provider, request: ProviderRequest) -> bytes:
    writer = ChunkWriter("chatcmpl-bench", "bench-0ms", 1)
    collected = Collected()
    out: list[bytes] = []
    async for batch in provider.events(request):
        for event in batch:
            collected.add(event)
            data = writer.event(event)
            if data is not None:
                out.append(data)
    return b"".join(out)


async def _measure(streams: int, repeats: int) -> tuple[float, int]:
    provider = _Provider(UpstreamSettings(provider="openai"), None)  # type: ignore[arg-type]
    provider.body_bytes = _sse_body()
    raw = {"model": "bench-0ms", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    checked, raw = decode_chat_request(json.dumps(raw).encode())
    request = ProviderRequest(checked, raw, "m", True, "chatcmpl-bench")
    size = len(await _one(provider, request))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(streams):
            await _one(provider, request)
        best = min(best, (time.perf_counter() - start) / streams)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    best, size = asyncio.run(_measure(args.streams, args.repeats))
    print(f"{best * 1e6:.1f} us per stream (parse + relay + chunk writing), {size} bytes out")


if __name__ == "__main__":
    main()
