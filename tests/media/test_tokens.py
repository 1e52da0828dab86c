"""OpenAI's tile formula, checked against the figures OpenAI publishes."""

from __future__ import annotations

import itertools

import pytest

from relaygate.media.tokens import (
    MAX_IMAGE_TOKENS,
    image_token_bound,
    image_tokens,
    scaled_size,
)


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        pytest.param(1024, 1024, "high", 765, id="1024-square-high"),
        pytest.param(2048, 4096, "high", 1105, id="2048x4096-high"),
        pytest.param(4096, 8192, "low", 85, id="4096x8192-low"),
        pytest.param(1024, 1024, None, 765, id="no-detail-counts-as-high"),
        pytest.param(1024, 1024, "auto", 765, id="auto-counts-as-high"),
        pytest.param(512, 512, "high", 255, id="one-tile"),
        pytest.param(100, 100, "high", 255, id="small-images-are-not-scaled-up"),
        pytest.param(513, 100, "high", 425, id="two-tiles"),
        pytest.param(768, 2048, "high", 1445, id="largest"),
        pytest.param(1920, 1080, "high", 1105, id="full-hd"),
    ],
)
def test_published_examples(width: int, height: int, detail: str | None, tokens: int) -> None:
    assert image_tokens(width, height, detail) == tokens


def test_scaling_fits_2048_then_shortest_side_768() -> None:
    assert scaled_size(2048, 4096) == (768, 1536)
    assert scaled_size(4096, 2048) == (1536, 768)
    assert scaled_size(1024, 1024) == (768, 768)
    assert scaled_size(700, 300) == (700, 300)


def test_extreme_aspect_ratios_keep_a_side_of_at_least_one_pixel() -> None:
    assert scaled_size(65535, 1) == (2048, 1)
    assert image_tokens(1, 65535) == 85 + 170 * 4


def test_no_image_costs_more_than_the_bound() -> None:
    sides = [1, 2, 511, 512, 513, 767, 768, 769, 1024, 1500, 2047, 2048, 2049, 4096, 65535]
    worst = max(image_tokens(w, h, "high") for w, h in itertools.product(sides, sides))
    assert worst == MAX_IMAGE_TOKENS == 1445
    assert image_token_bound("high") == image_token_bound(None) == MAX_IMAGE_TOKENS
    assert image_token_bound("low") == 85
