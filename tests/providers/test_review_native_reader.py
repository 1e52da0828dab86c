"""Review (branch ``review``): the pass-through reader's partial line is re-concatenated and
re-scanned on every read (bytes + bytes, rfind over it all): a long line costs O(n^2)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from relaygate.providers.anthropic_native import _Reader


def test_a_long_stream_line_is_read_in_linear_time() -> None:
    reader = _Reader(SimpleNamespace(  # type: ignore[arg-type]
        settings=SimpleNamespace(max_line_bytes=32 << 20), label="up"))
    piece = b"x" * (16 << 10)
    started = time.process_time()
    for _ in range((16 << 20) // len(piece)):  # one 16 MiB line (the limit is 32 MiB)
        reader.read(piece)
    # LineSplitter (the Responses reader) does this in ~0.02 s; main takes ~4 s (32 MiB: ~16 s)
    assert time.process_time() - started < 0.5
