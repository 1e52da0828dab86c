"""The image cache: by URL, shared by content hash, bounded in bytes, expiring."""

from __future__ import annotations

from relaygate.media.cache import ImageCache
from relaygate.media.formats import CheckedImage, sniff
from tests.media.samples import png


def image(pad: int) -> CheckedImage:
    data = png(2, 2, pad=pad)
    info = sniff(data)
    assert info is not None
    return CheckedImage.of(data, info)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_url_gets_its_image_back() -> None:
    cache = ImageCache(10_000, 60)
    first = image(10)
    cache.put("http://a/1", first)
    assert cache.get("http://a/1") is first
    assert cache.get("http://a/2") is None


def test_the_same_content_under_two_urls_is_stored_once() -> None:
    cache = ImageCache(10_000, 60)
    one, same = image(100), image(100)
    cache.put("http://a/1", one)
    cache.put("http://b/1", same)
    assert len(cache) == 2
    assert cache.bytes == one.size
    assert cache.by_digest(one.digest) is one


def test_least_recently_used_urls_go_first_when_full() -> None:
    a, b, c = image(100), image(200), image(300)
    cache = ImageCache(a.size + b.size + c.size - 1, 60)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "b" is now the least recently used
    cache.put("c", c)
    assert cache.get("b") is None
    assert cache.get("a") is a
    assert cache.get("c") is c
    assert cache.bytes == a.size + c.size <= cache.max_bytes


def test_shared_content_is_freed_with_its_last_url() -> None:
    shared = image(100)
    cache = ImageCache(shared.size * 2, 60)
    cache.put("a", shared)
    cache.put("b", shared)
    cache.put("big", image(200))  # larger than "shared": evicts "a", then "b"
    assert cache.get("a") is None
    assert cache.get("b") is None
    assert cache.by_digest(shared.digest) is None


def test_an_image_larger_than_the_bound_is_not_kept() -> None:
    big = image(1000)
    cache = ImageCache(big.size - 1, 60)
    cache.put("a", big)
    assert cache.get("a") is None
    assert cache.bytes == 0


def test_a_zero_bound_turns_the_cache_off() -> None:
    cache = ImageCache(0, 60)
    cache.put("a", image(1))
    assert len(cache) == 0


def test_entries_expire() -> None:
    clock = Clock()
    cache = ImageCache(10_000, 60, clock)
    first = image(1)
    cache.put("a", first)
    clock.now += 59.9
    assert cache.get("a") is first
    clock.now += 0.1
    assert cache.get("a") is None
    assert cache.bytes == 0


def test_putting_a_url_again_replaces_its_image() -> None:
    cache = ImageCache(10_000, 60)
    old, new = image(1), image(2)
    cache.put("a", old)
    cache.put("a", new)
    assert cache.get("a") is new
    assert cache.bytes == new.size
