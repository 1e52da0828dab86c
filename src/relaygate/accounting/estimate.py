"""Token estimates made before the upstream answers.

``prompt_token_bound`` is an upper bound used for the credit reservation: a BPE token is at
least one byte, and the JSON body holds every byte of text plus syntax that costs more than the
chat template's per-message overhead, so the body's length minus its image URLs, plus a per-image
allowance, bounds the prompt tokens. ``prompt_token_guess`` (about four bytes a token) is the
realistic figure used for tokens-per-minute limits and by the simulator.
"""

from __future__ import annotations

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
            total += len(content.encode())
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


def image_token_allowance(images: list[ImagePart], per_image: int) -> int:
    """Tokens to allow for the images before their sizes are known: 85 for a low-detail image,
    ``per_image`` (the model's ``image_token_estimate``) for any other."""
    return sum(
        LOW_DETAIL_IMAGE_TOKENS if part.image_url.detail == "low" else per_image for part in images
    )


def prompt_token_bound(request: ChatRequest, body_size: int, image_tokens: int) -> int:
    """An upper bound of the prompt tokens (see the module docstring); ``image_tokens`` is the
    allowance for one image of unknown size."""
    images = image_parts(request)
    url_bytes = sum(len(part.image_url.url) for part in images)
    return max(1, body_size - url_bytes) + image_token_allowance(images, image_tokens)


def prompt_token_guess(request: ChatRequest, image_tokens: int = 0) -> int:
    """A realistic estimate of the prompt tokens (about four bytes a token)."""
    text = _text_bytes(request)
    overhead = _MESSAGE_OVERHEAD * len(request.messages) + 3
    images = image_token_allowance(image_parts(request), image_tokens)
    return text // _BYTES_PER_TOKEN + overhead + images


def output_token_bound(request: ChatRequest, model_max: int) -> int:
    """The most output tokens the request can produce."""
    asked = request.max_completion_tokens or request.max_tokens or model_max
    return min(asked, model_max) * (request.n or 1)
