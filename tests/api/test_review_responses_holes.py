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
