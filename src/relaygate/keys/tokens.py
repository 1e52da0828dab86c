"""API keys: random with a visible ``sk-`` prefix, stored only as a SHA-256 hash.

A key holds 256 random bits, so a fast hash is as safe as a slow one here: nobody can guess
their way to a preimage, and the hot path stays cheap.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-"
_DISPLAY = 10


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The part of a key safe to show in listings (never enough to use it)."""
    return key[:_DISPLAY]
