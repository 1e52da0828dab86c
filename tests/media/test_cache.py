"""The image cache: by URL, shared by content hash, bounded in bytes (everything it holds),
expiring."""

from __future__ import annotations

import gc
import tracemalloc

from relaygate.media.cache import ImageCache, blob_cost, url_cost
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
    assert cache.bytes == blob_cost(one) + url_cost("http://a/1") + url_cost("http://b/1")
    assert cache.by_digest(one.digest) is one


def test_least_recently_used_urls_go_first_when_full() -> None:
    a, b, c = image(100), image(200), image(300)
    cost = {
        name: blob_cost(item) + url_cost(name) for name, item in zip("abc", (a, b, c), strict=True)
    }
    cache = ImageCache(sum(cost.values()) - 1, 60)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "b" is now the least recently used
    cache.put("c", c)
    assert cache.get("b") is None
    assert cache.get("a") is a
    assert cache.get("c") is c
    assert cache.bytes == cost["a"] + cost["c"] <= cache.max_bytes


def test_shared_content_is_freed_with_its_last_url() -> None:
    shared = image(100)
    cache = ImageCache(blob_cost(shared) * 2, 60)
    cache.put("a", shared)
    cache.put("b", shared)
    cache.put("big", image(200))  # larger than "shared": evicts "a", then "b"
    assert cache.get("a") is None
    assert cache.get("b") is None
    assert cache.by_digest(shared.digest) is None


def test_an_image_larger_than_the_bound_is_not_kept() -> None:
    big = image(1000)
    cache = ImageCache(blob_cost(big) + url_cost("a") - 1, 60)
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
    assert cache.bytes == blob_cost(new) + url_cost("a")


def test_the_bound_covers_the_urls_and_holds_in_real_memory() -> None:
    """20,000 long URLs to one tiny image once held 87 MB against a 64 MiB bound: the URLs
    were not counted. Now the accounted size stays within the bound, and so does the memory
    the cache really allocates (measured by tracemalloc)."""
    tiny = image(1)
    bound = 2 * 1024 * 1024
    urls = [f"https://images.example/{i:06d}/" + "x" * 2000 for i in range(2000)]
    gc.collect()
    tracemalloc.start()
    try:
        cache = ImageCache(bound, 300)
        for url in urls:
            cache.put(url, tiny)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    strings = sum(url_cost(url) - url_cost("") for url in urls[-len(cache) :])
    assert 0 < len(cache) < len(urls)
    assert cache.bytes <= bound
    # the URL strings were allocated before tracing started; what the cache keeps of them
    # is counted here by their size
    assert held + strings <= bound
    assert cache.get(urls[-1]) is tiny
    assert cache.get(urls[0]) is None


def test_many_short_urls_stay_within_the_bound_in_real_memory() -> None:
    tiny = image(1)
    bound = 1024 * 1024
    urls = [f"u{i}" for i in range(20_000)]
    tracemalloc.start()
    try:
        cache = ImageCache(bound, 300)
        for url in urls:
            cache.put(url, tiny)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) < len(urls)
    assert cache.bytes <= bound
    assert held + sum(url_cost(url) - url_cost("") for url in urls[-len(cache) :]) <= bound


def test_expired_entries_are_swept_without_being_looked_up() -> None:
    clock = Clock()
    cache = ImageCache(10_000_000, 60, clock)
    tiny = image(1)
    for i in range(100):
        cache.put(f"old{i}", tiny)
    clock.now += 61
    # every insert or lookup drops a few expired entries, oldest first, never all at once
    cache.put("new", tiny)
    assert 0 < 100 - (len(cache) - 1) < 100
    for _ in range(100):
        cache.get("absent")
    assert len(cache) == 1
    assert cache.bytes == blob_cost(tiny) + url_cost("new")


def test_expired_entries_go_when_room_is_needed_and_when_looked_up() -> None:
    clock = Clock()
    tiny = image(1)
    cache = ImageCache(blob_cost(tiny) + 3 * url_cost("a"), 60, clock)
    cache.put("a", tiny)
    cache.put("b", tiny)
    clock.now += 60
    assert cache.get("b") is None
    assert len(cache) == 0
    assert cache.bytes == 0
