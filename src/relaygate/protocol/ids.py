"""Completion ids in the contract's form: ``chatcmpl-<UTC yyyymmddHHMMSS><9 digits><8 letters>``."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits
_cache: tuple[int, str] = (0, "")


def _stamp(now: int) -> str:
    global _cache
    if _cache[0] != now:
        _cache = (now, time.strftime("%Y%m%d%H%M%S", time.gmtime(now)))
    return _cache[1]


def completion_id(now: float | None = None) -> str:
    """A new, unique completion id (also the ledger's request id)."""
    t = time.time() if now is None else now
    digits = f"{secrets.randbelow(1_000_000_000):09d}"
    letters = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"chatcmpl-{_stamp(int(t))}{digits}{letters}"
