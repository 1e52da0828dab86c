"""Image inputs: size and count limits, fetching (SSRF-safe), caching and forwarding."""

from __future__ import annotations

from typing import Annotated

import msgspec

from relaygate.settings.types import PositiveFloat, PositiveInt


class ImageSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Image inputs (``image_url`` parts): limits, fetching and forwarding."""

    max_bytes: PositiveInt = 10 * 1024 * 1024
    """Largest image accepted, in bytes (downloaded or base64-decoded); larger ones get 413."""
    max_images: PositiveInt = 16
    """Most ``image_url`` parts in one request; more get 400."""
    max_total_bytes: PositiveInt = 64 * 1024 * 1024
    """Most image bytes one request may bring in, all its images together; more gets 413."""
    connect_timeout: PositiveFloat = 5.0
    """Seconds to connect to the server of an image URL."""
    fetch_timeout: PositiveFloat = 15.0
    """Seconds for a whole image fetch (name lookup, redirects and download); a slower server
    gets 400, however steadily it trickles bytes."""
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    """Redirects followed per image URL; each hop is checked like the first URL."""
    allow_internal: list[str] = msgspec.field(default_factory=list)
    """Internal hosts that image URLs may reach although their addresses are not public: host
    names, IP addresses or CIDR networks, each with an optional port (``images.corp.example``,
    ``10.1.2.0/24``, ``127.0.0.1:9000``, ``[fd00::/8]:8443``). Empty (the default) refuses every
    loopback, private, link-local, shared, multicast and reserved address."""
    forward_urls: bool = False
    """Send checked http(s) image URLs to upstreams unchanged, to fetch themselves; when false,
    the bytes relaygate checked are sent inline as base64 ``data:`` URLs."""
    fetch_connections: PositiveInt = 256
    """Most image fetches in flight per worker, all keys together (the connection pool)."""
    per_key_fetches: PositiveInt = 16
    """Most image fetches one key may have in flight per worker; its further fetches wait
    for one of its own (within ``fetch_timeout``). Must be below ``fetch_connections``, so that
    one key never holds the whole pool and the others find free connections."""
    per_key_fetch_seconds: PositiveFloat = 240.0
    """Seconds of image fetching one key may use per minute and worker, its concurrent fetches
    added up (slow and timed-out ones included; cache hits and ``data:`` URLs are free). A key
    that has spent it gets 429 for requests that need a fetch until it has recovered. The
    default is one burst of ``per_key_fetches`` fetches that each take the whole default
    ``fetch_timeout``."""
    cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    """Memory for fetched images, reused by URL and shared by content hash; 0 turns it off.
    The bound covers everything the cache holds: each distinct content, every URL and a fixed
    overhead per entry."""
    cache_seconds: PositiveFloat = 300.0
    """How long a fetched image is reused for the same URL; expired entries are dropped."""

    def __post_init__(self) -> None:
        # Imported here: relaygate.media imports this module.
        from relaygate.media.addresses import parse_allow_rule

        if self.per_key_fetches >= self.fetch_connections:
            raise ValueError(
                f"per_key_fetches ({self.per_key_fetches}) must be below fetch_connections"
                f" ({self.fetch_connections}), so that one key cannot hold every connection"
            )
        for i, entry in enumerate(self.allow_internal):
            try:
                parse_allow_rule(entry)
            except ValueError as exc:
                raise ValueError(f"allow_internal[{i}]: {exc}") from None
