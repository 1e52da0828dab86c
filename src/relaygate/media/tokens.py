"""Prompt tokens of an image, by OpenAI's published tile formula.

``detail: "low"`` costs a flat 85 tokens. ``high`` (and ``auto``, counted as ``high`` because the
reservation must not fall short) first scales the image to fit in 2048 x 2048, then so that its
shortest side is at most 768 px, and charges 170 tokens per 512 px tile plus 85. Images are only
ever scaled down. The result is never more than :data:`MAX_IMAGE_TOKENS` (8 tiles), which is the
bound a reservation can use before the image's dimensions are known.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

BASE_TOKENS = 85
TILE_TOKENS = 170
LOW_DETAIL_TOKENS = 85
_FIT = 2048
_SHORT_SIDE = 768
_TILE = 512
TILE_FORMULA_PROVIDERS = frozenset({"openai", "azure", "simulator"})
"""Providers whose image tokens follow this formula (OpenAI's models, on OpenAI or Azure, and the
simulator that stands in for them); Anthropic and Gemini count images their own way."""
MAX_IMAGE_TOKENS = BASE_TOKENS + TILE_TOKENS * 8
"""The most any image costs: after scaling it is at most 768 x 2048, which is 2 x 4 tiles."""
PIXELS_PER_TOKEN = 750
MAX_PIXEL_IMAGE_TOKENS = 1_600
"""Anthropic's published estimate of an image's tokens is width x height / 750, and an image
above about 1.15 megapixels (~1,600 tokens) is scaled down first: a 1092 x 1092 image is
~1,590 tokens where the tile formula gives 765."""


def pixel_image_tokens(width: int, height: int) -> int:
    """Prompt tokens of a ``width`` x ``height`` image by Anthropic's estimate (see above)."""
    return min(MAX_PIXEL_IMAGE_TOKENS, -(-width * height // PIXELS_PER_TOKEN))


def bills_by_pixels(providers: Iterable[str]) -> bool:
    """Whether an upstream among ``providers`` (their names) is not a tile-formula one: its
    images are then reserved by :func:`pixel_image_tokens` too (the larger figure)."""
    return any(name not in TILE_FORMULA_PROVIDERS for name in providers)


def scaled_size(width: int, height: int) -> tuple[int, int]:
    """The size OpenAI tiles an image at (``high`` detail), as in its published calculation."""
    if width > _FIT or height > _FIT:
        if width >= height:
            width, height = _FIT, max(1, height * _FIT // width)
        else:
            width, height = max(1, width * _FIT // height), _FIT
    if width >= height and height > _SHORT_SIDE:
        width, height = width * _SHORT_SIDE // height, _SHORT_SIDE
    elif height > width and width > _SHORT_SIDE:
        width, height = _SHORT_SIDE, height * _SHORT_SIDE // width
    return width, height


def image_tokens(width: int, height: int, detail: str | None = None) -> int:
    """Prompt tokens of a ``width`` x ``height`` image at ``detail`` (``low``/``high``/``auto``)."""
    if detail == "low":
        return LOW_DETAIL_TOKENS
    width, height = scaled_size(width, height)
    tiles = math.ceil(width / _TILE) * math.ceil(height / _TILE)
    return BASE_TOKENS + TILE_TOKENS * tiles


def image_token_bound(detail: str | None = None) -> int:
    """The most an image at ``detail`` can cost, whatever its size."""
    return LOW_DETAIL_TOKENS if detail == "low" else MAX_IMAGE_TOKENS


__all__ = [
    "BASE_TOKENS",
    "LOW_DETAIL_TOKENS",
    "MAX_IMAGE_TOKENS",
    "MAX_PIXEL_IMAGE_TOKENS",
    "TILE_FORMULA_PROVIDERS",
    "TILE_TOKENS",
    "bills_by_pixels",
    "image_token_bound",
    "image_tokens",
    "pixel_image_tokens",
    "scaled_size",
]
