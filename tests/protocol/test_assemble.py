"""Stream chunks and collected answers built from events, text passed through as bytes too."""

from __future__ import annotations

import json

from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.providers.base import EncodedText, Passthrough, TextDelta, TokenUsage


def deltas(sent: bytes) -> list[dict[str, object]]:
    return [
        json.loads(event.removeprefix(b"data: "))["choices"][0]["delta"]
        for event in sent.split(b"\n\n")
        if event
    ]


def test_encoded_text_first_in_a_stream_still_opens_with_the_assistant_role() -> None:
    writer = ChunkWriter("chatcmpl-x", "public", 1)
    sent = writer.event(EncodedText([b'"a\\u00e9"', b'"b"'])) or b""
    assert deltas(sent) == [{"role": "assistant", "content": "a\u00e9"}, {"content": "b"}]
    assert deltas(writer.event(EncodedText([b'"c"'])) or b"") == [{"content": "c"}]


def test_collected_text_keeps_the_order_of_decoded_and_encoded_pieces() -> None:
    collected = Collected()
    for event in (
        TextDelta("a"),
        EncodedText([b'"b"', b'"\\"c\\""']),
        TextDelta("d"),
        EncodedText([b'"e"']),
    ):
        collected.add(event)
    assert collected.deltas == 5
    answer = collected.completion("c", "public", 1, TokenUsage())
    assert answer.choices[0].message.content == 'ab"c"de'


def test_a_partial_usage_is_completed_by_the_estimate_and_the_tokens_received() -> None:
    """The input side told (Anthropic's message_start) keeps its prompt; one that did not
    tell it (no prompt tokens) gets the prompt estimate; output is at least what came."""
    collected = Collected()
    collected.add(TextDelta("a"))
    collected.add(TextDelta("b"))
    collected.add(TokenUsage(prompt_tokens=30, partial=True))
    assert collected.usage_or_estimate(500) == TokenUsage(prompt_tokens=30, completion_tokens=2)
    collected.add(TokenUsage(completion_tokens=42, partial=True))
    assert collected.usage_or_estimate(500) == TokenUsage(prompt_tokens=500, completion_tokens=42)
    collected.add(TokenUsage(prompt_tokens=0, completion_tokens=42))  # told: billed as told
    assert collected.usage_or_estimate(500) == TokenUsage(completion_tokens=42)


def test_an_answer_without_usage_is_billed_the_estimate_and_its_relayed_tokens() -> None:
    collected = Collected()
    collected.add(Passthrough(b"...", 250))
    assert collected.usage_or_estimate(500) == TokenUsage(prompt_tokens=500, completion_tokens=250)
