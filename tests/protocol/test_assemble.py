"""Stream chunks and collected answers built from events, text passed through as bytes too."""

from __future__ import annotations

import json

from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.providers.base import EncodedText, TextDelta, TokenUsage


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
