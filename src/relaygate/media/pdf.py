"""How many pages a PDF has, read cheaply, for the credit reservation of a ``document`` block.

Anthropic bills each page of a PDF as an image of the page plus its extracted text: its
documentation puts the text at 1,500-3,000 tokens a page, and a page image costs up to about
1,600. A page is therefore reserved at :data:`PAGE_TOKENS` (4,500: both at their highest),
whatever the size of the file: a 100-page PDF of blank pages is about 13 KB.

The pages are counted as the page objects (``/Type /Page``, not ``/Pages``) in the file's
bytes: one linear scan, no parsing. Page objects inside compressed object streams (PDF 1.5)
are not visible that way; a PDF whose pages cannot be counted is reserved as
:data:`UNKNOWN_PAGES` pages, the most Anthropic accepts in one request.
"""

from __future__ import annotations

import binascii
import re

PAGE_TOKENS = 4_500
"""The prompt tokens reserved for one page of a PDF (see the module docstring)."""
UNKNOWN_PAGES = 100
"""The pages reserved for a PDF relaygate cannot count (fetched by the upstream, stored there,
or with its page objects compressed): the most Anthropic accepts in one request."""
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9_])")


def pdf_pages(data: bytes) -> int | None:
    """The page objects in ``data`` (a PDF), or ``None`` if it shows none."""
    pages = sum(1 for _ in _PAGE.finditer(data))
    return pages or None


def base64_pdf_pages(data: str) -> int:
    """The pages of a base64-encoded PDF, :data:`UNKNOWN_PAGES` if they cannot be counted."""
    try:
        decoded = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return UNKNOWN_PAGES
    return pdf_pages(decoded) or UNKNOWN_PAGES
