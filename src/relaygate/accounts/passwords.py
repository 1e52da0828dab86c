"""Passwords: the policy, and argon2id hashing (``argon2-cffi``) off the event loop.

A hash costs ``password_hash_memory_kib`` of memory and tens of milliseconds of CPU, so hashes
run in worker threads (the C code releases the GIL), at most :data:`MAX_CONCURRENT_HASHES` at a
time per process: sign-ins queue rather than exhaust memory, and past
:data:`MAX_WAITING_HASHES` waiting they get 503. Oversized input is refused before
any hashing (see :func:`check_password`), and a password never reaches a log or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from relaygate.errors import InvalidRequest, ServerBusy
from relaygate.settings import Settings

MAX_PASSWORD_BYTES = 1024
"""The longest password accepted, in UTF-8 bytes: hashing is linear in its length, and nobody
types more (a passphrase of 100 words is about 600 bytes)."""
MAX_CONCURRENT_HASHES = min(4, os.cpu_count() or 1)
"""argon2 hashes running at once per process (each holds ``password_hash_memory_kib``)."""

MAX_WAITING_HASHES = 64
"""Hashes waiting for a slot per process; one more is refused with 503 and ``Retry-After``
(a flood of sign-ins from many addresses must not queue without end)."""


class _Slots:
    """The hashing slots of one event loop, and how many wait for one."""

    def __init__(self) -> None:
        self.semaphore = asyncio.Semaphore(MAX_CONCURRENT_HASHES)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self.semaphore.locked() and self.waiting >= MAX_WAITING_HASHES:
            raise ServerBusy("Too many sign-ins at once; try again shortly", retry_after=1)
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.semaphore.release()


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def hasher(settings: Settings) -> PasswordHasher:
    """The argon2id hasher with the configured parameters."""
    return _hasher(
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    )


def password_too_long(password: str) -> bool:
    """Whether ``password`` is over :data:`MAX_PASSWORD_BYTES`, decided without encoding a
    huge string (a character is at most 4 bytes in UTF-8)."""
    if len(password) > MAX_PASSWORD_BYTES:
        return True
    return len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES


def check_password(password: str, settings: Settings) -> None:
    """The password policy for a new password: ``password_min_length`` characters or more,
    at most :data:`MAX_PASSWORD_BYTES` bytes, no control characters (a pasted newline is a
    mistake, not entropy). The message never quotes the password."""
    if not isinstance(password, str):
        raise InvalidRequest("password: must be a string", param="password")
    if password_too_long(password):
        raise InvalidRequest(
            f"password: at most {MAX_PASSWORD_BYTES} bytes (UTF-8)", param="password"
        )
    if len(password) < settings.password_min_length:
        raise InvalidRequest(
            f"password: at least {settings.password_min_length} characters", param="password"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise InvalidRequest("password: must not contain control characters", param="password")


def _slot() -> contextlib.AbstractAsyncContextManager[None]:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = _Slots()
    return slots.hold()


async def hash_password(password: str, settings: Settings) -> str:
    """The argon2id hash of ``password`` (PHC string with its own random salt)."""
    async with _slot():
        return await asyncio.to_thread(hasher(settings).hash, password)


def _verify(hasher_: PasswordHasher, stored: str, password: str) -> tuple[bool, bool]:
    try:
        hasher_.verify(stored, password)
    except VerifyMismatchError:
        return False, False
    except (VerificationError, InvalidHashError):
        return False, False
    return True, hasher_.check_needs_rehash(stored)


async def verify_password(stored: str, password: str, settings: Settings) -> tuple[bool, bool]:
    """``(matches, needs_rehash)``: whether ``password`` matches the stored hash, and whether
    that hash was made with other parameters than the configured ones."""
    async with _slot():
        return await asyncio.to_thread(_verify, hasher(settings), stored, password)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return _hasher(time_cost, memory_kib, parallelism).hash("relaygate: no such user")


async def dummy_hash(settings: Settings) -> str:
    """A hash with the configured parameters that no password matches in practice: an unknown
    email is verified against it, so that it costs what a known one costs."""
    key = (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    )
    async with _slot():
        return await asyncio.to_thread(_dummy_hash, *key)
