"""``data:`` URLs (RFC 2397) as OpenAI clients send images: decoded with their size checked.

The declared media type is ignored (the bytes are sniffed); base64 is the usual encoding,
percent-encoding is read too. The size is bounded from the text's length before anything is
decoded, and checked exactly afterwards.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from relaygate.errors import InvalidRequest, RequestTooLarge

_WHITESPACE = re.compile(r"[ \t\r\n]+")
MB = 1024 * 1024


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def size_text(limit: int) -> str:
    """``10MB`` for a whole number of mebibytes, else the byte count."""
    return f"{limit // MB}MB" if limit % MB == 0 else f"{limit} bytes"


def too_large(where: str, limit: int) -> RequestTooLarge:
    """The contract's 413 for one image above ``limit`` bytes."""
    text = size_text(limit)
    return RequestTooLarge(
        f"Image file too large: the image at {where} is larger than {text}",
        param="content",
        fallback_suggestion=f"compress image to under {text}",
    )


def decode_data_url(url: str, where: str, limit: int) -> bytes:
    """The bytes of a ``data:`` URL; 400 when it cannot be read, 413 above ``limit`` bytes."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise InvalidRequest(f"The data: URL at {where} has no ',' before its data", param=where)
    if header.lower().endswith(";base64"):
        payload = _WHITESPACE.sub("", payload)
        if (len(payload) // 4) * 3 - 2 > limit:
            raise too_large(where, limit)
        data = _b64decode(payload, where)
    else:
        if len(payload) > 3 * limit:
            raise too_large(where, limit)
        data = unquote_to_bytes(payload)
    if len(data) > limit:
        raise too_large(where, limit)
    return data


HEAD_CHARS = 32 * 1024
"""How much of a base64 ``data:`` URL :func:`data_url_image_size` decodes (24 KiB of image)."""


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """The width and height of a base64 ``data:`` URL's image, read from its first bytes only;
    ``None`` when they do not say (not base64, not JPEG, PNG or WebP, or a JPEG whose frame
    header lies further in). The same bytes give the same size when the whole image is read."""
    from relaygate.media.formats import sniff  # imported here: formats is not needed otherwise

    header, comma, payload = url[: HEAD_CHARS + 256].partition(",")
    if not comma or not header.lower().endswith(";base64"):
        return None
    payload = _WHITESPACE.sub("", payload)[:HEAD_CHARS]
    try:
        data = base64.b64decode(payload[: len(payload) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        return None
    info = sniff(data)
    return None if info is None else (info.width, info.height)


def _b64decode(payload: str, where: str) -> bytes:
    payload = payload.rstrip("=")
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"The data: URL at {where} is not valid base64", param=where) from None


__all__ = ["data_url_image_size", "decode_data_url", "is_data_url", "size_text", "too_large"]
