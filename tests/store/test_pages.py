"""Ledger batches are written in power-of-two pages (bounded statement variety)."""

from __future__ import annotations

import pytest

from relaygate.store.sql import _pages


@pytest.mark.parametrize("count", [0, 1, 2, 3, 511, 512, 513, 700, 1023, 5000])
def test_pages_cover_every_row_once_in_powers_of_two(count: int) -> None:
    pages = _pages(count)
    covered = [i for start, end in pages for i in range(start, end)]
    assert covered == list(range(count))
    for start, end in pages:
        size = end - start
        assert size & (size - 1) == 0


def test_any_batch_uses_at_most_a_dozen_distinct_page_sizes() -> None:
    sizes = {end - start for count in range(1, 2049) for start, end in _pages(count)}
    assert len(sizes) <= 12
