"""Review (branch ``review``): holes in the money path of ``/v1/responses``.

Each test asserts the CORRECT behaviour, so it FAILS on main while the hole is open."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.api.test_responses import (  # noqa: F401  (fixtures)
    _close_clients,
    client,
    gateway,
    key,
    make,
    rows,
    upstream,
)
from tests.support import fake_responses
from tests.support.fake_responses import FakeResponses
from tests.support.gateway import GatewayProcess


def test_a_passed_through_answer_without_usage_is_not_free(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """openai_responses.usage_from(None) is all zeros: a 200 whose usage is missing (or
    null) is billed $0, where the chat path bills the estimate."""
    made = fake_responses._response

    def without_usage(body: dict[str, Any], b: Any) -> dict[str, Any]:
        return {**made(body, b), "usage": None}

    monkeypatch.setattr(fake_responses, "_response", without_usage)
    client(gateway, key).responses.create(model="gpt-native", input="Hello " * 2000)
    (row,) = rows(gateway, key, 1)
    assert row["cost_micros"] > 0 and row["prompt_tokens"] > 0, row


def test_a_data_only_stream_is_not_ended_by_response_created() -> None:
    """Without ``event:`` lines the type is guessed from the first 200 bytes: the Response
    object's ``"error": null`` in response.created matches ``"error"``, so the reader takes it
    as the final event: zero usage and DONE (the stream ends there, billed $0)."""
    from relaygate.providers.openai_responses import _Reader

    reader = _Reader(SimpleNamespace(  # type: ignore[arg-type]
        settings=SimpleNamespace(max_line_bytes=1 << 20), label="up"))
    created = {"type": "response.created", "sequence_number": 0,
               "response": {"id": "resp_1", "object": "response", "created_at": 1741290958,
                            "status": "in_progress", "error": None, "usage": None}}  # fmt: skip
    reader.read(b"data: " + json.dumps(created).encode() + b"\n\n")
    assert reader.final is None


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_refused_continuation_does_not_load_its_history(
    make: Any, upstream: FakeResponses
) -> None:
    """The stored history is read (and decoded, translated, re-encoded) before admission and
    outside the key's share of bodies in flight: requests of ~100 bytes that end in 429 (or
    402) each make relaygate hold a ~30 MB conversation several times over, with no bound on
    how many run at once."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import closing

    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "10", "--rpm", "1")
    first = client(gateway, key).responses.create(model="gpt-5.2", input="Hello")
    big = json.dumps([{"type": "message", "role": "user", "content": "x" * (30 << 20)}])
    with closing(sqlite3.connect(gateway.directory / "relaygate.db", timeout=10)) as db:
        db.execute("UPDATE stored_responses SET conversation = ? WHERE id = ?", (big, first.id))
        db.commit()
    assert gateway.process is not None
    before = _peak_rss_mb(gateway.process.pid)
    body = {"model": "gpt-5.2", "input": "Go on", "previous_response_id": first.id}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: gateway.post("/v1/responses", body, key["key"]),
                                range(8)))  # fmt: skip
    assert {status for status, _, _ in answers} == {429}
    grown = _peak_rss_mb(gateway.process.pid) - before
    assert grown < 64, f"the gateway's peak RSS grew {grown:.0f} MB for 8 refused requests"
