"""Counting a PDF's pages for the reservation of a ``document`` block."""

from __future__ import annotations

import base64

import pytest

from relaygate.media.pdf import UNKNOWN_PAGES, base64_pdf_pages, pdf_pages
from tests.media.samples import blank_pdf


@pytest.mark.parametrize("pages", [1, 3, 100])
def test_the_page_objects_are_counted_not_the_page_tree(pages: int) -> None:
    assert pdf_pages(blank_pdf(pages)) == pages
    assert base64_pdf_pages(base64.b64encode(blank_pdf(pages)).decode()) == pages


@pytest.mark.parametrize(
    "spelling",
    [b"/Type/Page/", b"/Type /Page ", b"/Type\n/Page>>", b"/Type  /Page\r"],
    ids=["tight", "spaced", "newline", "two-spaces"],
)
def test_a_page_object_is_found_however_it_is_spaced(spelling: bytes) -> None:
    pdf = b"%PDF-1.4\n1 0 obj <</Type/Pages/Count 2>> endobj\n" + (b"2 0 obj <<" + spelling) * 2
    assert pdf_pages(pdf) == 2


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(base64.b64encode(b"%PDF-1.7\n<</Type/ObjStm/N 100>>").decode(), id="no-pages"),
        pytest.param("not base64 at all!", id="not-base64"),
    ],
)
def test_a_pdf_whose_pages_cannot_be_counted_is_taken_at_the_most(data: str) -> None:
    assert base64_pdf_pages(data) == UNKNOWN_PAGES
