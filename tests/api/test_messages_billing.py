"""Review (branch ``review``): holes found in the money path of ``/v1/messages``.

Each test asserts the CORRECT behaviour, so it FAILS on main while the hole is open."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

from relaygate.providers.base import TokenUsage
from tests.api.test_messages import (  # noqa: F401  (fixtures)
    CLAUDE,
    CLAUDE_PRICE,
    GOOD,
    claude,
    gateway,
    key,
    post,
    rows_of,
)
from tests.providers.fake_anthropic import FakeAnthropic, Reply
from tests.support.gateway import GatewayProcess


def blank_pdf(pages: int) -> bytes:
    """A valid PDF of ``pages`` blank Letter pages (about 60 bytes a page)."""
    objs = ["<</Type/Catalog/Pages 2 0 R>>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs.append(f"<</Type/Pages/Kids[{kids}]/Count {pages}>>")
    objs += ["<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>"] * pages
    out = b"%PDF-1.4\n"
    offsets = []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj {obj} endobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer <</Size {len(objs) + 1}/Root 1 0 R>>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_a_base64_pdf_is_reserved_for_its_pages_not_its_bytes(
    gateway: GatewayProcess, claude: FakeAnthropic
) -> None:
    """Anthropic bills a PDF page as an image plus its text (1,500-3,000 tokens a page); a
    100-page PDF of blank pages is ~8 KB of base64, so the reservation (body bytes) covers
    ~9k tokens. A key with $0.05 is admitted, the upstream bills ~160k input tokens ($0.48),
    the charge is clamped at the balance: the operator pays the rest."""
    pdf = base64.b64encode(blank_pdf(100)).decode()
    body = {
        "model": CLAUDE, "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": pdf}},
            {"type": "text", "text": "Summarize"}]}],
    }  # fmt: skip
    assert len(json.dumps(body)) < 14_000  # bound ~13k tokens: $0.04 reserved
    poor = gateway.create_key("--credits", "0.05")
    claude.default = Reply(input_tokens=160_000, output_tokens=10)  # what 100 pages cost
    status, _, answer = post(gateway, body, {"x-api-key": poor["key"]})
    (row,) = rows_of(gateway, poor, 1) if status == 200 else ([{}])
    billed = CLAUDE_PRICE.cost(TokenUsage(prompt_tokens=160_000, completion_tokens=10))
    # correct: refused (402) before the upstream call, or charged in full
    assert status == 402 or row.get("cost_micros") == billed, (status, row, billed)


def test_a_cut_stream_bills_the_thinking_it_relayed(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    """Cut after 40,000 characters of thinking (~10,000 tokens the upstream generated and
    bills): output is counted as one token per content_block_delta event, so 6 are billed."""
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
    it) is billed 0: usage_from(Usage()) is all zeros, where the chat path bills the estimate."""
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
    assert row["cost_micros"] > 0 and row["prompt_tokens"] > 0, row


def test_an_estimated_count_takes_the_keys_limits_too(gateway: GatewayProcess) -> None:
    """count_tokens for a model without an Anthropic upstream is estimated by relaygate: no
    402 for a key with nothing to spend and no RPM slot, so any key (even one with $0, RPM 1)
    can make relaygate decode and translate bodies up to max_request_bytes (32 MiB) without end."""
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello " * 1000}]}
    broke = gateway.create_key("--credits", "0", "--rpm", "1")
    answers = [post(gateway, body, {"x-api-key": broke["key"]}, "/v1/messages/count_tokens")
               for _ in range(3)]  # fmt: skip
    assert [status for status, _, _ in answers] != [200, 200, 200], answers
