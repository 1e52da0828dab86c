"""Image (and PDF) bytes for tests, built to the formats' specifications (no imaging library
needed)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import decode_chat_request


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int = 1, height: int = 1, pad: int = 0) -> bytes:
    """A PNG of ``width`` x ``height`` (a valid 1x1 image; larger ones have valid headers),
    with ``pad`` extra bytes in a private ancillary chunk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    chunks = [_png_chunk(b"IHDR", header)]
    if pad:
        chunks.append(_png_chunk(b"prVt", b"\x00" * pad))
    chunks += [_png_chunk(b"IDAT", pixels), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def jpeg(width: int = 1, height: int = 1, sof: int = 0xC0, pad: int = 0) -> bytes:
    """A JPEG header: SOI, APP0 (JFIF), a comment of ``pad`` bytes, DQT, SOFn, SOS, EOI."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    comment = segment(0xFE, b"x" * pad) if pad else b""
    dqt = segment(0xDB, b"\x00" + bytes(range(64)))
    frame = segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    scan = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x00\x00"
    return b"\xff\xd8" + app0 + comment + dqt + frame + scan + b"\xff\xd9"


def _riff(chunk: bytes, body: bytes) -> bytes:
    payload = b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def webp_lossy(width: int, height: int) -> bytes:
    body = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return _riff(b"VP8 ", body)


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8)


def webp_extended(width: int, height: int) -> bytes:
    w, h = width - 1, height - 1
    body = b"\x10\x00\x00\x00" + w.to_bytes(3, "little") + h.to_bytes(3, "little")
    return _riff(b"VP8X", body + b"\x00" * 8)


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
HTML = b"<!DOCTYPE html><html><body>not an image</body></html>"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(url: str, detail: str | None = None) -> dict[str, Any]:
    image_url: dict[str, Any] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def chat(*messages: dict[str, Any]) -> tuple[ChatRequest, dict[str, Any]]:
    """A decoded request (as the API decodes it) with ``messages``."""
    body = {"model": "vision-model", "messages": list(messages)}
    return decode_chat_request(json.dumps(body).encode())


def one_image(url: str, detail: str | None = None) -> tuple[ChatRequest, dict[str, Any]]:
    return chat(user(text_part("what is this?"), image_part(url, detail)))


def blank_pdf(pages: int) -> bytes:
    """A valid PDF of ``pages`` blank Letter pages (about 60 bytes a page)."""
    objs = ["<</Type/Catalog/Pages 2 0 R>>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs.append(f"<</Type/Pages/Kids[{kids}]/Count {pages}>>")
    objs += ["<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>"] * pages
    out = b"%PDF-1.4\n"
    offsets = []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj {obj} endobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer <</Size {len(objs) + 1}/Root 1 0 R>>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out
