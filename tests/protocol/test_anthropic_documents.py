"""What a Messages request's ``document`` blocks add to its reservation."""

from __future__ import annotations

import base64
from typing import Any

from relaygate.media.pdf import PAGE_TOKENS, UNKNOWN_PAGES
from relaygate.protocol.anthropic_messages.documents import document_tokens
from tests.media.samples import blank_pdf


def _body(*sources: dict[str, Any], in_tool_result: bool = False) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "document", "source": s} for s in sources]
    if in_tool_result:
        blocks = [{"type": "tool_result", "tool_use_id": "t", "content": blocks}]
    return {"messages": [{"role": "user", "content": [*blocks, {"type": "text", "text": "?"}]}]}


def _pdf(pages: int) -> dict[str, Any]:
    data = base64.b64encode(blank_pdf(pages)).decode()
    return {"type": "base64", "media_type": "application/pdf", "data": data}


def test_a_base64_pdf_adds_its_pages_beyond_its_bytes() -> None:
    source = _pdf(10)
    expected = 10 * PAGE_TOKENS - len(source["data"])
    assert document_tokens(_body(source)) == expected
    assert document_tokens(_body(source, in_tool_result=True)) == expected
    assert document_tokens(_body(source, source)) == 2 * expected


def test_a_document_relaygate_cannot_see_is_taken_at_the_most_pages() -> None:
    url = {"type": "url", "url": "https://example.com/a.pdf"}
    stored = {"type": "file", "file_id": "file_1"}
    assert document_tokens(_body(url)) == UNKNOWN_PAGES * PAGE_TOKENS
    assert document_tokens(_body(url, stored)) == 2 * UNKNOWN_PAGES * PAGE_TOKENS


def test_text_documents_and_bodies_without_documents_add_nothing() -> None:
    text = {"type": "text", "media_type": "text/plain", "data": "hello " * 1000}
    assert document_tokens(_body(text)) == 0
    assert document_tokens({"messages": [{"role": "user", "content": "hi"}]}) == 0
