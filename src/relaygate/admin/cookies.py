"""The session cookie over HTTP, and who is asking: client address and scheme.

The cookie is ``HttpOnly`` (no script reads it), ``Path=/``, ``SameSite=Lax`` and, when the
client reached relaygate over HTTPS, ``Secure`` with the ``__Host-`` name prefix (the browser
then refuses it from plain HTTP and from any other host or path, so a sibling subdomain cannot
plant one). Lax rather than Strict: Strict drops the cookie when someone follows a link to the
console from a mail or a chat, and they land signed out; Lax sends it only on top-level GET
navigations, which change nothing here, while every write also needs the CSRF token (see
:mod:`relaygate.accounts.sessions`).

The client's address and scheme come from the connection, unless ``trusted_proxy_headers``
names headers to honour *and* the connection comes from one of ``trusted_proxies``. Then the
address is the right-most hop of the forwarding chain that is not a trusted proxy (every hop
left of it was written by the client, who can write anything there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, MutableMapping
from functools import lru_cache
from typing import Any

from relaygate.accounts.sessions import parse_cookie_value
from relaygate.settings import Settings

Scope = MutableMapping[str, Any]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SESSION_COOKIE = "relaygate_session"
"""The session cookie's name over plain HTTP (local development)."""
SECURE_SESSION_COOKIE = "__Host-relaygate_session"
"""Its name over HTTPS: ``__Host-`` makes the browser require Secure, ``Path=/`` and no
``Domain``."""
MAX_COOKIE_HEADER_BYTES = 8192
"""Cookie header bytes read per request (the rest is ignored, unparsed)."""
MAX_COOKIE_PAIRS = 64
MAX_FORWARDED_HEADER_BYTES = 4096
"""Forwarding header bytes read per request; a longer chain is read from its right end."""
MAX_HOPS = 32


def _headers(scope: Scope, name: bytes) -> Iterator[bytes]:
    for key, value in scope.get("headers", ()):
        if key == name:
            yield bytes(value)


def read_cookie(scope: Scope, name: str) -> str | None:
    """The value of cookie ``name`` (the first, as the browser orders them), reading at most
    :data:`MAX_COOKIE_HEADER_BYTES` of ``Cookie`` headers and :data:`MAX_COOKIE_PAIRS` pairs."""
    budget = MAX_COOKIE_HEADER_BYTES
    pairs = 0
    for raw in _headers(scope, b"cookie"):
        text = raw[:budget].decode("latin-1")
        budget -= len(raw)
        for pair in text.split(";"):
            pairs += 1
            if pairs > MAX_COOKIE_PAIRS:
                return None
            key, eq, value = pair.partition("=")
            if eq and key.strip() == name:
                return value.strip().strip('"')
        if budget <= 0:
            break
    return None


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_proxy(address: str | None, settings: Settings) -> bool:
    if address is None:
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in _networks(tuple(settings.trusted_proxies)))


def _trusted(settings: Settings) -> set[str]:
    return {name.lower() for name in settings.trusted_proxy_headers}


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _hop_address(text: str) -> str | None:
    """An address from one forwarding hop (``192.0.2.1``, ``192.0.2.1:4711``,
    ``"[2001:db8::1]:4711"``, ``2001:db8::1``), normalised; ``None`` for ``unknown``, an
    obfuscated name or anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _joined(scope: Scope, name: bytes) -> str:
    """Every line of a list header, joined, its right end kept when it is too long."""
    text = b",".join(_headers(scope, name)).decode("latin-1")
    return text[-MAX_FORWARDED_HEADER_BYTES:]


def _forwarded_elements(scope: Scope) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` elements, each its ``for``/``proto``/... pairs (lower-case)."""
    elements = []
    for element in _joined(scope, b"forwarded").split(",")[-MAX_HOPS:]:
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            key, eq, value = pair.partition("=")
            if eq:
                pairs[key.strip().lower()] = value.strip().strip('"')
        elements.append(pairs)
    return elements


def _walk(scope: Scope, settings: Settings) -> tuple[str | None, str | None]:
    """``(client address, forwarded proto)`` from the trusted forwarding chain: hops are read
    from the right while they are trusted proxies; the first that is not is the client. A hop
    that is no address stops the walk at the last address known. Every hop trusted: the
    left-most."""
    peer = _peer(scope)
    trusted = _trusted(settings)
    if not _is_proxy(peer, settings):
        return peer, None
    if "forwarded" in trusted and any(True for _ in _headers(scope, b"forwarded")):
        hops = [(e.get("for", ""), e.get("proto")) for e in _forwarded_elements(scope)]
    elif "x-forwarded-for" in trusted:
        hops = [(h, None) for h in _joined(scope, b"x-forwarded-for").split(",")[-MAX_HOPS:]]
    else:
        return peer, None
    current, proto = peer, None
    for text, hop_proto in reversed(hops):
        address = _hop_address(text)
        if address is None:
            break
        current, proto = address, hop_proto or proto
        if not _is_proxy(address, settings):
            break
    return current, proto


def client_address(scope: Scope, settings: Settings) -> str | None:
    """The client's address: the connection's peer, or per the trusted proxy headers."""
    return _walk(scope, settings)[0]


def request_scheme(scope: Scope, settings: Settings) -> str:
    """``https`` or ``http``: how the client reached relaygate (directly, or as the trusted
    proxy says: the ``proto`` of the client's ``Forwarded`` element, or the right-most
    ``X-Forwarded-Proto`` value, the one the nearest proxy set)."""
    direct = "https" if scope.get("scheme") in ("https", "wss") else "http"
    if not _is_proxy(_peer(scope), settings):
        return direct
    trusted = _trusted(settings)
    if "forwarded" in trusted:
        proto = _walk(scope, settings)[1]
        if proto is not None and proto.lower() in ("http", "https"):
            return proto.lower()
    if "x-forwarded-proto" in trusted:
        values = _joined(scope, b"x-forwarded-proto").split(",")
        proto = values[-1].strip().lower()
        if proto in ("http", "https"):
            return proto
    return direct


def is_secure(scope: Scope, settings: Settings) -> bool:
    """Whether the client reached relaygate over HTTPS (the cookie is then ``Secure``)."""
    return request_scheme(scope, settings) == "https"


def cookie_name(scope: Scope, settings: Settings) -> str:
    return SECURE_SESSION_COOKIE if is_secure(scope, settings) else SESSION_COOKIE


def session_cookie_value(scope: Scope, settings: Settings) -> str | None:
    """The session cookie a request carries: over HTTPS only the ``__Host-`` one counts."""
    return read_cookie(scope, cookie_name(scope, settings))


def _set_cookie(scope: Scope, settings: Settings, value: str, max_age: int) -> tuple[bytes, bytes]:
    secure = is_secure(scope, settings)
    name = SECURE_SESSION_COOKIE if secure else SESSION_COOKIE
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode("ascii")


def session_cookie(scope: Scope, settings: Settings, cookie_value: str) -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` header that hands a new session's cookie to the browser (it lasts
    ``session_lifetime_seconds``, as the session does at most)."""
    if parse_cookie_value(cookie_value) is None:
        raise ValueError("not a session cookie value")
    return _set_cookie(scope, settings, cookie_value, settings.session_lifetime_seconds)


def clear_session_cookie(scope: Scope, settings: Settings) -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` header that removes the session cookie (on sign-out)."""
    return _set_cookie(scope, settings, "", 0)
