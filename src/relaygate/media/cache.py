"""A bounded in-memory cache of checked images, by URL and by content hash.

URLs map to content hashes (least recently used first, each with an expiry); each distinct
content is stored once however many URLs serve it, and only distinct contents count against the
byte bound. Adding past the bound evicts the least recently used URLs until it fits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from relaygate.media.formats import CheckedImage


@dataclass(slots=True)
class _Blob:
    image: CheckedImage
    urls: int


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
        self._urls: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._blobs: dict[str, _Blob] = {}
        self.bytes = 0
        """Bytes held: each distinct content once."""

    def __len__(self) -> int:
        return len(self._urls)

    def get(self, url: str) -> CheckedImage | None:
        """The image cached for ``url``, unless it expired."""
        entry = self._urls.get(url)
        if entry is None:
            return None
        digest, expires = entry
        if self._clock() >= expires:
            self._drop(url)
            return None
        self._urls.move_to_end(url)
        return self._blobs[digest].image

    def by_digest(self, digest: str) -> CheckedImage | None:
        """The cached image with this SHA-256 (hex), if any URL still holds it."""
        blob = self._blobs.get(digest)
        return blob.image if blob is not None else None

    def put(self, url: str, image: CheckedImage) -> None:
        """Cache ``image`` for ``url``; an image larger than the whole bound is not kept."""
        if image.size > self.max_bytes:
            return
        if url in self._urls:
            self._drop(url)
        blob = self._blobs.get(image.digest)
        if blob is None:
            blob = self._blobs[image.digest] = _Blob(image, 0)
            self.bytes += image.size
        blob.urls += 1
        self._urls[url] = (image.digest, self._clock() + self.ttl_seconds)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._urls)))

    def _drop(self, url: str) -> None:
        digest, _ = self._urls.pop(url)
        blob = self._blobs[digest]
        blob.urls -= 1
        if blob.urls == 0:
            del self._blobs[digest]
            self.bytes -= blob.image.size


__all__ = ["ImageCache"]
