"""Token estimates made before the upstream answers.

``prompt_token_bound`` is an upper bound used for the credit reservation: a BPE token is at
least one byte, and the JSON body holds every byte of text plus syntax that costs more than the
chat template's per-message overhead, so the body's length minus its image URLs, plus a per-image
allowance, bounds the prompt tokens. ``prompt_token_guess`` (about four bytes a token) is the
realistic figure used for tokens-per-minute limits and by the simulator.
"""

from __future__ import annotations

from relaygate.media.dataurl import data_url_image_size, is_data_url
from relaygate.media.tokens import (
    MAX_IMAGE_TOKENS,
    MAX_PIXEL_IMAGE_TOKENS,
    image_tokens,
    pixel_image_tokens,
)
from relaygate.protocol.types import (
    AssistantMessage,
    ChatRequest,
    ImagePart,
    TextPart,
)
from relaygate.protocol.validate import images_of

_BYTES_PER_TOKEN = 4
_MESSAGE_OVERHEAD = 4


def _text_bytes(request: ChatRequest) -> int:
    total = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            total += len(content) if content.isascii() else len(content.encode())
        elif content is not None:
            for part in content:
                if isinstance(part, TextPart):
                    total += len(part.text.encode())
        if isinstance(message, AssistantMessage) and message.tool_calls:
            total += len(str(message.tool_calls).encode())
    return total


def image_parts(request: ChatRequest) -> list[ImagePart]:
    return [part for _, _, part in images_of(request)]


LOW_DETAIL_IMAGE_TOKENS = 85
"""What OpenAI's tile formula charges for a ``detail: "low"`` image, whatever its size."""


def image_token_allowance(images: list[ImagePart], per_image: int, pixels: bool = False) -> int:
    """Tokens to allow for the images before they are fetched: 85 for a low-detail image; for
    an image inside the request (a base64 ``data:`` URL) whose size its first bytes give, the
    tokens OpenAI's tile formula charges for that size, while ``per_image`` (the model's
    ``image_token_estimate``) is that formula's maximum, the default; else ``per_image``.

    ``pixels``: an upstream of the model counts images by their pixels (Anthropic's
    ``width x height / 750``, :func:`~relaygate.media.tokens.pixel_image_tokens`), where
    ``detail`` means nothing: at the default ``per_image``, an image is allowed the larger of
    the two figures, and one of unknown size the pixel count's maximum (1,600)."""
    return sum(_image_allowance(part, per_image, pixels) for part in images)


def _image_allowance(part: ImagePart, per_image: int, pixels: bool) -> int:
    detail = part.image_url.detail
    if detail == "low" and not pixels:
        return LOW_DETAIL_IMAGE_TOKENS
    if per_image != MAX_IMAGE_TOKENS:
        return per_image
    url = part.image_url.url
    size = data_url_image_size(url) if is_data_url(url) else None
    if size is None:
        return MAX_PIXEL_IMAGE_TOKENS if pixels else per_image
    tiles = image_tokens(size[0], size[1], detail)
    return max(tiles, pixel_image_tokens(*size)) if pixels else tiles


def prompt_token_bound(
    request: ChatRequest,
    body_size: int,
    image_tokens: int,
    pixels: bool = False,
    images: list[ImagePart] | None = None,
) -> int:
    """An upper bound of the prompt tokens (see the module docstring); ``image_tokens`` is the
    allowance for one image of unknown size (``pixels``: see :func:`image_token_allowance`).
    ``images``: the request's :func:`image_parts`, when the caller has them already."""
    if images is None:
        images = image_parts(request)
    if not images:
        return max(1, body_size)
    url_bytes = sum(len(part.image_url.url) for part in images)
    return max(1, body_size - url_bytes) + image_token_allowance(images, image_tokens, pixels)


def prompt_token_guess(
    request: ChatRequest,
    image_tokens: int = 0,
    pixels: bool = False,
    images: list[ImagePart] | None = None,
) -> int:
    """A realistic estimate of the prompt tokens (about four bytes a token); ``images``: as
    for :func:`prompt_token_bound`."""
    text = _text_bytes(request)
    overhead = _MESSAGE_OVERHEAD * len(request.messages) + 3
    if images is None:
        images = image_parts(request)
    if not images:
        return text // _BYTES_PER_TOKEN + overhead
    allowance = image_token_allowance(images, image_tokens, pixels)
    return text // _BYTES_PER_TOKEN + overhead + allowance


def output_token_bound(request: ChatRequest, model_max: int) -> int:
    """The most output tokens the request can produce."""
    asked = request.max_completion_tokens or request.max_tokens or model_max
    return min(asked, model_max) * (request.n or 1)
