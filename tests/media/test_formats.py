"""Formats by magic bytes only, and dimensions from the headers."""

from __future__ import annotations

import pytest

from relaygate.media.formats import CheckedImage, ImageInfo, describe, sniff
from tests.media.samples import (
    GIF,
    HTML,
    SVG,
    jpeg,
    png,
    webp_extended,
    webp_lossless,
    webp_lossy,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(png(1, 1), ImageInfo("image/png", 1, 1), id="png-1x1"),
        pytest.param(png(4096, 2048), ImageInfo("image/png", 4096, 2048), id="png-large"),
        pytest.param(jpeg(640, 480), ImageInfo("image/jpeg", 640, 480), id="jpeg-baseline"),
        pytest.param(jpeg(300, 7000, sof=0xC2), ImageInfo("image/jpeg", 300, 7000),
                     id="jpeg-progressive"),
        pytest.param(jpeg(65535, 2, pad=5000), ImageInfo("image/jpeg", 65535, 2),
                     id="jpeg-after-a-long-segment"),
        pytest.param(webp_lossy(1023, 77), ImageInfo("image/webp", 1023, 77), id="webp-vp8"),
        pytest.param(webp_lossless(16383, 1), ImageInfo("image/webp", 16383, 1),
                     id="webp-vp8l"),
        pytest.param(webp_extended(20000, 3), ImageInfo("image/webp", 20000, 3),
                     id="webp-vp8x"),
    ],
)
def test_accepted_formats_and_their_dimensions(data: bytes, expected: ImageInfo) -> None:
    assert sniff(data) == expected


def test_jpeg_fill_bytes_between_segments_are_skipped() -> None:
    data = jpeg(10, 20)
    filled = data[:2] + b"\xff\xff" + data[2:]
    assert sniff(filled) == ImageInfo("image/jpeg", 10, 20)


def test_jpeg_huffman_table_is_not_taken_for_a_frame_header() -> None:
    data = jpeg(10, 20)
    dht = b"\xff\xc4\x00\x07" + b"\x00\x11\x22\x33\x44"
    assert sniff(data[:2] + dht + data[2:]) == ImageInfo("image/jpeg", 10, 20)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        pytest.param(GIF, "a GIF image", id="gif"),
        pytest.param(SVG, "an SVG image", id="svg"),
        pytest.param(b"\xef\xbb\xbf  <svg xmlns='x'/>", "an SVG image", id="svg-bom"),
        pytest.param(HTML, "an HTML page", id="html"),
        pytest.param(b"<html><img src=x></html>", "an HTML page", id="html-bare"),
        pytest.param(b"BM\x00\x00\x00\x00", "a BMP image", id="bmp"),
        pytest.param(b"II*\x00\x08\x00", "a TIFF image", id="tiff"),
        pytest.param(b"%PDF-1.7", "a PDF document", id="pdf"),
        pytest.param(b"\x00\x00\x00\x1cftypavif", "an AVIF image", id="avif"),
        pytest.param(b"\x00\x00\x00\x18ftypheic", "an HEIF/HEIC or MP4 file", id="heic"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"hello world", "not an image format relaygate recognises", id="text"),
        pytest.param(png(2, 2)[:20], "a damaged or truncated PNG image", id="png-truncated"),
        pytest.param(b"\xff\xd8\xff\xd9", "a damaged or truncated JPEG image", id="jpeg-no-frame"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "a damaged or truncated WebP image",
                     id="webp-truncated"),
        pytest.param(png(0, 10), "a damaged or truncated PNG image", id="png-zero-width"),
        pytest.param(b"RIFF\x00\x00\x00\x00WAVEfmt ", "not an image format relaygate recognises",
                     id="riff-wave"),
    ],
)
def test_everything_else_is_refused_and_named(data: bytes, what: str) -> None:
    assert sniff(data) is None
    assert describe(data) == what


def test_a_jpeg_whose_segment_lengths_run_off_the_end_is_refused() -> None:
    data = b"\xff\xd8\xff\xe0\xff\xff" + b"\x00" * 10
    assert sniff(data) is None


def test_a_jpeg_with_a_zero_segment_length_is_refused() -> None:
    assert sniff(b"\xff\xd8\xff\xe0\x00\x00\xff\xc0" + b"\x00" * 20) is None


def test_checked_image_digest_and_data_url() -> None:
    data = png(3, 3)
    image = CheckedImage.of(data, ImageInfo("image/png", 3, 3))
    assert image.size == len(data)
    assert len(image.digest) == 64
    assert image.data_url().startswith("data:image/png;base64,iVBORw0KGgo")
