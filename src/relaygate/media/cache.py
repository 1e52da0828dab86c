"""A bounded in-memory cache of checked images, by URL and by content hash.

URLs map to content hashes (least recently used first, each with an expiry); each distinct
content is stored once however many URLs serve it. The byte bound covers everything the cache
holds: every URL (its string and a fixed overhead for its entries) and every distinct content
(its bytes and a fixed overhead for its records). Adding past the bound evicts the least
recently used URLs until it fits.

Expired URLs go: on access, and by a sweep of the oldest ones at every insert and lookup (a few
at a time, so no call does more than a bounded amount of work). Every URL lives for the same
time, so insertion order is expiry order and the sweep only ever looks at the front.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from relaygate.media.formats import CheckedImage

URL_OVERHEAD = 400
"""Bytes accounted for each URL on top of its string: its entry in both ordered dicts (hash
table slot and linked-list node of each) and its record. Measured under ``tracemalloc`` at 312
bytes at most (CPython 3.11, dict tables just grown);
``tests/media/test_cache.py`` checks the bound against real memory."""
BLOB_OVERHEAD = 512
"""Bytes accounted for each distinct content on top of its bytes object: the checked image, its
format record, its hex digest and the dict slot that holds it."""
SWEEP = 8
"""Expired URLs dropped at most per insert or lookup (bounded work); an insert that has to make
room evicts as many as it needs."""


@dataclass(slots=True)
class _Blob:
    image: CheckedImage
    urls: int
    cost: int


@dataclass(slots=True)
class _Entry:
    digest: str
    expires: float
    cost: int


def url_cost(url: str) -> int:
    """What one URL costs against the bound, besides its content."""
    return sys.getsizeof(url) + URL_OVERHEAD


def blob_cost(image: CheckedImage) -> int:
    """What one distinct content costs against the bound."""
    return sys.getsizeof(image.data) + BLOB_OVERHEAD


class ImageCache:
    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._urls: OrderedDict[str, _Entry] = OrderedDict()
        """Least recently used first."""
        self._expiry: OrderedDict[str, None] = OrderedDict()
        """Least recently inserted (so soonest to expire) first."""
        self._blobs: dict[str, _Blob] = {}
        self.bytes = 0
        """Bytes accounted: every URL and each distinct content once, overheads included."""

    def __len__(self) -> int:
        return len(self._urls)

    def get(self, url: str) -> CheckedImage | None:
        """The image cached for ``url``, unless it expired."""
        now = self._clock()
        self._sweep(now, SWEEP)
        entry = self._urls.get(url)
        if entry is None:
            return None
        if now >= entry.expires:
            self._drop(url)
            return None
        self._urls.move_to_end(url)
        return self._blobs[entry.digest].image

    def by_digest(self, digest: str) -> CheckedImage | None:
        """The cached image with this SHA-256 (hex), if any URL still holds it."""
        blob = self._blobs.get(digest)
        return blob.image if blob is not None else None

    def put(self, url: str, image: CheckedImage) -> None:
        """Cache ``image`` for ``url``; what would not fit in the whole bound is not kept."""
        now = self._clock()
        self._sweep(now, SWEEP)
        if url in self._urls:
            self._drop(url)
        cost = url_cost(url)
        if cost + blob_cost(image) > self.max_bytes:
            return
        while True:
            blob = self._blobs.get(image.digest)
            added = cost if blob is not None else cost + blob_cost(image)
            if self.bytes + added <= self.max_bytes:
                break
            self._drop(next(iter(self._urls)))
        if blob is None:
            blob = self._blobs[image.digest] = _Blob(image, 0, blob_cost(image))
            self.bytes += blob.cost
        blob.urls += 1
        self._urls[url] = _Entry(image.digest, now + self.ttl_seconds, cost)
        self._expiry[url] = None
        self.bytes += cost

    def _sweep(self, now: float, most: int) -> None:
        """Drop up to ``most`` expired URLs, oldest first."""
        expiry, urls = self._expiry, self._urls
        for _ in range(most):
            if not expiry:
                return
            url = next(iter(expiry))
            if now < urls[url].expires:
                return
            self._drop(url)

    def _drop(self, url: str) -> None:
        entry = self._urls.pop(url)
        del self._expiry[url]
        self.bytes -= entry.cost
        blob = self._blobs[entry.digest]
        blob.urls -= 1
        if blob.urls == 0:
            del self._blobs[entry.digest]
            self.bytes -= blob.cost


__all__ = ["BLOB_OVERHEAD", "URL_OVERHEAD", "ImageCache", "blob_cost", "url_cost"]
