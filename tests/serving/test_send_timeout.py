"""A client that never reads: past ``send_timeout`` it is taken as gone, and the request ends
as a client disconnect (a stream is billed by the disconnect rule)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from relaygate.api.http import Message, Receive, Scope, Send
from tests.conftest import catalog
from tests.serving.support import read_to_close, serving, wait_until
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess, ledger

GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def test_a_send_that_waits_past_send_timeout_ends_as_a_disconnect() -> None:
    heard: list[Message] = []
    ended = threading.Event()

    async def endless(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(100_000):  # 6 GB: far more than any socket buffer holds
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        heard.append(await receive())
        ended.set()

    with serving(endless, send_timeout=0.2) as server:
        sock = server.connect(GET, rcvbuf=4096)
        assert ended.wait(30)  # the app heard the disconnect and ended
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "released")
        read_to_close(sock)  # what the buffers held, then the close
    assert heard == [{"type": "http.disconnect"}]


def test_a_stream_to_a_client_that_never_reads_is_billed_as_a_disconnect(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    config = catalog(upstream.base_url, send_timeout_seconds=0.5)
    config["models"]["long"] = {
        "pricing": {"input": "0.1", "output": "0.4"},
        "max_output_tokens": 200_000,
        "upstreams": [
            {
                "provider": "simulator",
                "options": {"first_token_ms": 0, "inter_token_ms": 0.01, "output_tokens": 200_000},
            }
        ],
    }
    gateway = GatewayProcess(tmp_path, config).start()
    try:
        created = gateway.create_key("--credits", "10", "--concurrency", "1")
        body = json.dumps(
            {"model": "long", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\nauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
            % (created["key"].encode(), len(body), body)
        )
        gateway.wait_until(
            lambda: (
                [row["status"] for row in ledger(gateway, created["id"])] == ["client_disconnected"]
            ),
            timeout=60,
            message="the stream settled as a client disconnect",
        )
        read_to_close(sock)  # the server closed it
        # The key's concurrency slot is free again.
        hello = {"model": "relaygate-simulator", "messages": [{"role": "user", "content": "hi"}]}
        assert gateway.post("/v1/chat/completions", hello, created["key"])[0] == 200
    finally:
        gateway.stop()
