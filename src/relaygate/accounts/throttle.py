"""Sign-in throttling per client address and per email, shared by every process and replica.

Each attempt is counted *before* its password is checked, in one atomic upsert per subject
(see :func:`relaygate.store.identity_sql.charge_attempts`), so that however many attempts
arrive at once on however many processes, at most ``sign_in_failures_per_*`` of them in a
window ever reach the password check. A sign-in that succeeds gives its attempt back: the
email's count is cleared, the address's count is lowered by one (an office behind one address
is not locked out by its own successful sign-ins).

The counts live in the database rather than in Redis: every deployment has the database (Redis
is optional), replicas already share it, and sign-ins are rare enough that one small write each
costs nothing; a second implementation would only be a second thing to get right.

Subjects are stored hashed (``email:<sha256>``): the email an attempt names may be a typo or a
password typed in the wrong field, and it need not exist.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from relaygate.errors import RateLimited
from relaygate.settings import Settings
from relaygate.store import identity_sql
from relaygate.store.sql import SqlStore

THROTTLED_MESSAGE = "Too many sign-in attempts; try again later"
"""The one message of a throttled sign-in, whether the address or the email is throttled, and
whether the email exists or not."""


def address_subject(address: str | None) -> str:
    """The throttle subject of a client address: an IPv6 address counts by its /64 (one host
    usually holds a whole /64), anything unparseable as itself."""
    text = address or "unknown"
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            text = str(parsed.ipv4_mapped)
        elif isinstance(parsed, ipaddress.IPv6Address):
            text = str(ipaddress.IPv6Network((parsed, 64), strict=False))
        else:
            text = str(parsed)
    return "address:" + hashlib.sha256(text.encode()).hexdigest()


def email_subject(email: str) -> str:
    """The throttle subject of a normalised email."""
    return "email:" + hashlib.sha256(email.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted sign-in attempt: give it back with :func:`succeeded`."""

    address: str
    email: str


async def attempt(
    store: SqlStore, settings: Settings, email: str, address: str | None, now: int
) -> Attempt:
    """Count an attempt for ``address`` and the normalised ``email``; :class:`RateLimited`
    (429 with ``Retry-After``: the end of the window that is full) when either is past its
    limit, before any password is checked."""
    subjects = [address_subject(address), email_subject(email)]
    limits = [settings.sign_in_failures_per_address, settings.sign_in_failures_per_email]
    window = settings.sign_in_window_seconds
    counts = await identity_sql.charge_attempts(store, subjects, now, window)
    waits = [
        start + window - now
        for (failures, start), limit in zip(counts, limits, strict=True)
        if failures > limit
    ]
    if waits:
        raise RateLimited(THROTTLED_MESSAGE, retry_after=max(waits))
    return Attempt(address=subjects[0], email=subjects[1])


async def succeeded(store: SqlStore, counted: Attempt) -> None:
    """A counted attempt signed in: clear its email's count, give its address one back."""
    await identity_sql.clear_attempts(store, counted.email)
    await identity_sql.refund_attempt(store, counted.address)
