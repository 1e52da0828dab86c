"""Completion ids in the contract's form: ``chatcmpl-<UTC yyyymmddHHMMSS><9 digits><8 letters>``."""

from __future__ import annotations

import os
import string
import time

_ALPHABET = string.ascii_letters + string.digits
_PAIRS = [_ALPHABET[r % 62] + _ALPHABET[r // 62] for r in range(62 * 62)]
"""Two base-62 letters, the less significant first, for each value below 62²."""
_cache: tuple[int, str] = (0, "")
_ID_BYTES = 10
_POOL_SIZE = 256 * _ID_BYTES
_pool = b""
_taken = 0
"""The bytes of ``_pool`` already used (each id's are used once)."""


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)  # a forked child never repeats its parent's


def _random_bytes() -> bytes:
    """``_ID_BYTES`` from the OS's CSPRNG, drawn 256 ids at a time: one system call, not one
    per request (and one slice of the pool per id)."""
    global _pool, _taken
    start = _taken
    if start + _ID_BYTES > len(_pool):
        _pool, start = os.urandom(_POOL_SIZE), 0
    _taken = start + _ID_BYTES
    return _pool[start : start + _ID_BYTES]


def _stamp(now: int) -> str:
    global _cache
    if _cache[0] != now:
        _cache = (now, time.strftime("%Y%m%d%H%M%S", time.gmtime(now)))
    return _cache[1]


def completion_id(now: float | None = None, prefix: str = "chatcmpl-") -> str:
    """A new, unique completion id (also the ledger's request id): 78 random bits; other
    dialects name theirs with their own ``prefix`` (``msg_``)."""
    t = time.time() if now is None else now
    n = int.from_bytes(_random_bytes(), "big")
    n, digits = divmod(n, 1_000_000_000)
    # eight base-62 letters, least significant first, taken two at a time
    n, a = divmod(n, 3844)
    n, b = divmod(n, 3844)
    n, c = divmod(n, 3844)
    d = n % 3844
    return f"{prefix}{_stamp(int(t))}{digits:09d}{_PAIRS[a]}{_PAIRS[b]}{_PAIRS[c]}{_PAIRS[d]}"
