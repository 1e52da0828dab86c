"""What the ``document`` blocks of a Messages request may cost, for the credit reservation.

The reservation bounds a prompt by the body's bytes (a token is at least a byte), which a PDF
does not respect: Anthropic bills its pages, not its bytes (:mod:`relaygate.media.pdf`). So a
base64 PDF is reserved at its pages times :data:`~relaygate.media.pdf.PAGE_TOKENS` when that is more
than its bytes, and a document relaygate cannot see (a ``url`` or ``file`` source, only sent
when the model's ``allow_fields`` names it) at :data:`~relaygate.media.pdf.UNKNOWN_PAGES` pages.
Text documents are text: their bytes bound them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relaygate.media.pdf import PAGE_TOKENS, UNKNOWN_PAGES, base64_pdf_pages


def _documents(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The source of every document block: in messages, and in their tool results."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            inner = block.get("content")
            for part in (block, *(inner if isinstance(inner, list) else ())):
                source = part.get("source") if isinstance(part, dict) else None
                if isinstance(source, dict) and part.get("type") == "document":
                    yield source


def _tokens(source: dict[str, Any]) -> tuple[int, int]:
    """(the bytes the document takes in the body, the tokens its pages may cost)."""
    kind = source.get("type")
    data = source.get("data")
    if kind == "base64" and isinstance(data, str):
        if source.get("media_type") != "application/pdf":
            return len(data), 0
        return len(data), base64_pdf_pages(data) * PAGE_TOKENS
    if kind in ("url", "file"):
        return 0, UNKNOWN_PAGES * PAGE_TOKENS
    return 0, 0  # text and content sources: their bytes bound them


def document_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens the documents of ``body`` may cost beyond their bytes: what the
    reservation adds to the body's size. (The decoded body is walked: its bytes could spell
    ``document`` with escapes.)"""
    extra = 0
    for source in _documents(body):
        size, tokens = _tokens(source)
        extra += max(0, tokens - size)
    return extra
