"""``/v1/responses`` where the money path meets what the upstream does not tell: an answer
without usage, and a continued conversation a key is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api import test_responses
from tests.api.test_responses import client, rows
from tests.support import fake_responses
from tests.support.fake_responses import FakeResponses
from tests.support.gateway import GatewayProcess

_close_clients = test_responses._close_clients  # fixtures
gateway, key, make, upstream = (
    test_responses.gateway,
    test_responses.key,
    test_responses.make,
    test_responses.upstream,
)


def test_a_passed_through_answer_without_usage_is_not_free(
    gateway: GatewayProcess,
    key: dict[str, Any],
    upstream: FakeResponses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 200 whose usage is missing (or null) is billed the estimate, as the chat path bills
    it, not $0."""
    made = fake_responses._response

    def without_usage(body: dict[str, Any], b: Any) -> dict[str, Any]:
        return {**made(body, b), "usage": None}

    monkeypatch.setattr(fake_responses, "_response", without_usage)
    client(gateway, key).responses.create(
        model="gpt-native", input="Hello " * 2000, instructions="Be brief. " * 500
    )  # the body echoes the instructions: ~1,250 tokens that are not output
    (row,) = rows(gateway, key, 1)
    assert row["prompt_tokens"] > 2000, row  # "Hello " * 2000: the estimate
    # the answer's output by its bytes (a short text: its JSON, 4 bytes a token), not the body's
    assert 0 < row["completion_tokens"] < 100, row
    assert row["cost_micros"] > 0, row


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_refused_continuation_does_not_load_its_history(
    make: Any, upstream: FakeResponses
) -> None:
    """Only the stored history's size is read before admission: requests of ~100 bytes that
    end in 429 do not each make relaygate hold a ~30 MB conversation (decoded, translated,
    re-encoded: several times over), however many run at once."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import closing

    gateway = make(stored_responses=True, stored_response_seconds=3600)
    limited = gateway.create_key("--credits", "10", "--rpm", "1")
    first = client(gateway, limited).responses.create(model="gpt-5.2", input="Hello")
    big = json.dumps([{"type": "message", "role": "user", "content": "x" * (30 << 20)}])
    with closing(sqlite3.connect(gateway.directory / "relaygate.db", timeout=10)) as db:
        db.execute("UPDATE stored_responses SET conversation = ? WHERE id = ?", (big, first.id))
        db.commit()
    assert gateway.process is not None
    before = _peak_rss_mb(gateway.process.pid)
    body = {"model": "gpt-5.2", "input": "Go on", "previous_response_id": first.id}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: gateway.post("/v1/responses", body, limited["key"]),
                                range(8)))  # fmt: skip
    assert {status for status, _, _ in answers} == {429}
    grown = _peak_rss_mb(gateway.process.pid) - before
    assert grown < 64, f"the gateway's peak RSS grew {grown:.0f} MB for 8 refused requests"
