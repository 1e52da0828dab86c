"""Image formats by their magic bytes, and the pixel dimensions from their headers.

Only JPEG, PNG and WebP are accepted; what a server's ``Content-Type`` or a ``data:`` URL's media
type claims is never trusted. Nothing is decoded beyond the headers: the dimensions are what the
token estimate needs, and the upstream model decodes the pixels itself.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD9)})


@dataclass(frozen=True, slots=True)
class ImageInfo:
    mime: str
    """``image/jpeg``, ``image/png`` or ``image/webp``."""
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """Image bytes that passed every check, with what was learned about them."""

    data: bytes = field(repr=False)
    info: ImageInfo
    digest: str
    """SHA-256 of ``data``, hex."""

    @classmethod
    def of(cls, data: bytes, info: ImageInfo) -> CheckedImage:
        return cls(data=data, info=info, digest=hashlib.sha256(data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)

    def data_url_prefix(self) -> str:
        return f"data:{self.info.mime};base64,"

    def data_url(self) -> str:
        return self.data_url_prefix() + base64.b64encode(self.data).decode("ascii")


def _be16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def _le(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def _png(data: bytes) -> ImageInfo | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return ImageInfo("image/png", width, height)


def _jpeg(data: bytes) -> ImageInfo | None:
    i, end = 2, len(data)
    while i < end:
        if data[i] != 0xFF:
            return None
        while i < end and data[i] == 0xFF:
            i += 1
        if i >= end:
            return None
        marker = data[i]
        i += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA) or i + 2 > end:
            return None  # end of image or start of scan before any frame header
        length = _be16(data, i)
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 7 > end:
                return None
            return ImageInfo("image/jpeg", _be16(data, i + 5), _be16(data, i + 3))
        i += length
    return None


def _webp(data: bytes) -> ImageInfo | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return ImageInfo("image/webp", _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _le(data, 21, 4)
        return ImageInfo("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        return ImageInfo("image/webp", _le(data, 24, 3) + 1, _le(data, 27, 3) + 1)
    return None


def _kind(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def sniff(data: bytes) -> ImageInfo | None:
    """The format and dimensions of a JPEG, PNG or WebP image; ``None`` for anything else,
    including one of those three whose header is damaged or cut short."""
    kind = _kind(data)
    if kind == "jpeg":
        info = _jpeg(data)
    elif kind == "png":
        info = _png(data)
    elif kind == "webp":
        info = _webp(data)
    else:
        return None
    if info is None or info.width <= 0 or info.height <= 0:
        return None
    return info


_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO image"),
    (b"%PDF", "a PDF document"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
)


def _markup(data: bytes) -> str | None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "an SVG image"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if head.startswith(b"<"):
        return "a markup (XML or HTML) document"
    return None


def describe(data: bytes) -> str:
    """What ``data`` looks like, for an error message about a refused image."""
    if not data:
        return "empty"
    kind = _kind(data)
    if kind is not None:
        return f"a damaged or truncated {kind.upper() if kind != 'webp' else 'WebP'} image"
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "an AVIF image" if brand.startswith(b"avi") else "an HEIF/HEIC or MP4 file"
    return _markup(data) or "not an image format relaygate recognises"


__all__ = ["CheckedImage", "ImageInfo", "describe", "sniff"]
