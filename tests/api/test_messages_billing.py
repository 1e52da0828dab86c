"""What ``/v1/messages`` reserves and bills where the upstream's figures do not tell it: PDF
pages, a stream cut short, an answer without usage, and relaygate's own token counts."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

from tests.api import test_messages
from tests.api.test_messages import CLAUDE, COUNT, GOOD, post, rows_of
from tests.media.samples import blank_pdf
from tests.providers.fake_anthropic import FakeAnthropic, Reply
from tests.support.gateway import GatewayProcess

gateway, claude, key = test_messages.gateway, test_messages.claude, test_messages.key  # fixtures


def _pdf_body(pages: int) -> dict[str, Any]:
    pdf = base64.b64encode(blank_pdf(pages)).decode()
    return {
        "model": CLAUDE, "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": pdf}},
            {"type": "text", "text": "Summarize"}]}],
    }  # fmt: skip


def test_a_base64_pdf_is_reserved_for_its_pages_not_its_bytes(
    gateway: GatewayProcess, claude: FakeAnthropic
) -> None:
    """Anthropic bills a PDF page as an image plus its text (1,500-3,000 tokens a page); a
    100-page PDF of blank pages is ~8 KB of base64, so a reservation by body bytes covers
    ~9k tokens: a key with $0.05 would be admitted, the upstream bill ~160k input tokens
    ($0.48), the charge be clamped at the balance and the operator pay the rest."""
    body = _pdf_body(100)
    assert len(json.dumps(body)) < 14_000  # by its bytes: ~13k tokens, $0.04 reserved
    poor = gateway.create_key("--credits", "0.05")
    claude.default = Reply(input_tokens=160_000, output_tokens=10)  # what 100 pages cost
    status, _, answer = post(gateway, body, {"x-api-key": poor["key"]})
    assert status == 402, answer  # 100 pages at 4,500 tokens: $1.35 reserved
    assert answer["error"]["message"].startswith("Insufficient quota"), answer
    assert not claude.received


def test_a_pdf_a_key_can_afford_is_admitted(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    """A few pages reserve little: the PDF reaches the upstream as sent, billed as told."""
    claude.default = Reply(input_tokens=4_800, output_tokens=10)
    status, _, answer = post(gateway, _pdf_body(3), {"x-api-key": key["key"]})
    assert status == 200, answer
    (row,) = rows_of(gateway, key, 1)
    assert row["prompt_tokens"] == 4_800
    sent = claude.received[0].body["messages"][0]["content"][0]["source"]["data"]
    assert base64.b64decode(sent) == blank_pdf(3)


def test_a_cut_stream_bills_the_thinking_it_relayed(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    """Cut after 40,000 characters of thinking (~10,000 tokens the upstream generated and
    bills): output is counted by the deltas' bytes, not one token per delta event (6)."""
    claude.default = Reply(thinking="x" * 40_000, chunks=4, text="y" * 40, cut=True)
    request = urllib.request.Request(
        gateway.url + "/v1/messages",
        data=json.dumps({**GOOD, "max_tokens": 20_000, "stream": True}).encode(),
        headers={"content-type": "application/json", "x-api-key": key["key"]},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        relayed = response.read()
    assert relayed.count(b"x") >= 40_000
    (row,) = rows_of(gateway, key, 1)
    assert row["completion_tokens"] >= 40_000 // 4, row  # ~4 characters a token


def test_an_answer_without_usage_is_not_free(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    """A 200 body without ``usage`` (an Anthropic-compatible upstream, a proxy that strips
    it) is billed the estimate, as the chat path bills it, not 0."""
    checked = claude._checked_message

    def without_usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message = checked(body, reply)
        message.pop("usage")
        return message

    claude._checked_message = without_usage  # type: ignore[method-assign]
    status, _, answer = post(gateway, {**GOOD, "messages": [
        {"role": "user", "content": "Hello " * 2000}]}, {"x-api-key": key["key"]})  # fmt: skip
    assert status == 200, answer
    (row,) = rows_of(gateway, key, 1)
    assert row["prompt_tokens"] > 2000, row  # "Hello " * 2000: the estimate
    # the answer's output by its bytes (a short text: its JSON, 4 bytes a token), not the body's
    assert 0 < row["completion_tokens"] < 40, row
    assert row["cost_micros"] > 0, row


def test_an_estimated_count_takes_the_keys_limits_too(gateway: GatewayProcess) -> None:
    """count_tokens for a model without an Anthropic upstream is estimated by relaygate, with
    the same permit as one counted upstream: 402 for a key with nothing to spend, and an RPM
    slot (else any key could make relaygate decode and translate bodies without end)."""
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello " * 1000}]}
    broke = gateway.create_key("--credits", "0")
    status, _, answer = post(gateway, body, {"x-api-key": broke["key"]}, COUNT)
    assert status == 402, answer
    slow = gateway.create_key("--credits", "1", "--rpm", "1")
    answers = [post(gateway, body, {"x-api-key": slow["key"]}, COUNT) for _ in range(2)]
    assert [status for status, _, _ in answers] == [200, 429], answers
    assert answers[0][2]["estimated"] is True
