"""Every image of a request, checked before any upstream call, and ready to forward.

:meth:`ImagePipeline.prepare` runs in two steps. First, without the network: the model's
``vision`` flag, the count cap, each URL's scheme, credentials and literal address, and every
``data:`` URL decoded, size-checked and sniffed. Then the http(s) URLs are fetched (each distinct
URL once, concurrently, through the cache, each within the key's share of the fetches: see
:mod:`~relaygate.media.shares`) and sniffed. The first failure decides the error (the first
step's in request order; then the first fetch to fail, the others being cancelled): 400 naming
the part in ``param``, the contract's 413 (``param: "content"``), or 429 when the key has spent
its fetch time.

The result holds each image's bytes, format, dimensions and token estimate, and the request body
with the images rewritten for the upstream: inline base64 ``data:`` URLs, or the checked URLs
unchanged for upstreams that fetch them themselves.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from relaygate import tracing
from relaygate.errors import ApiError, InvalidRequest, excerpt
from relaygate.media.addresses import AddressPolicy
from relaygate.media.cache import ImageCache
from relaygate.media.dataurl import decode_data_url, is_data_url
from relaygate.media.fetch import Budget, Fetcher, Lookup, check_url
from relaygate.media.formats import CheckedImage, describe, sniff
from relaygate.media.shares import FetchShares
from relaygate.media.tokens import image_token_bound, image_tokens
from relaygate.protocol.types import ChatRequest, ImagePart
from relaygate.protocol.validate import images_of
from relaygate.settings import ImageSettings

_SPACE = re.compile(r"\s")


def where_of(message: int, part: int) -> str:
    return f"messages[{message}].content[{part}]"


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One checked ``image_url`` part."""

    message: int
    part: int
    url: str
    """The URL as the client sent it (an http(s) URL or a ``data:`` URL)."""
    detail: str | None
    image: CheckedImage
    tokens: int
    """Estimated prompt tokens (OpenAI's tile formula on the real dimensions)."""

    @property
    def where(self) -> str:
        return where_of(self.message, self.part)


@dataclass(frozen=True, slots=True)
class PreparedImages:
    """What :meth:`ImagePipeline.prepare` found: the images and the body to forward."""

    raw: dict[str, Any]
    """The request body with its images rewritten as ``prepare`` was asked to."""
    images: tuple[PreparedImage, ...] = ()

    @property
    def tokens(self) -> int:
        """Estimated prompt tokens of all images together."""
        return sum(image.tokens for image in self.images)

    def rewrite(self, raw: dict[str, Any], *, inline: bool) -> dict[str, Any]:
        """``raw`` (the body as decoded) with the images rewritten for one upstream: http(s)
        URLs inlined as base64 ``data:`` URLs when ``inline``, else left for the upstream to
        fetch; ``data:`` URLs always carry the sniffed media type. ``raw`` is not modified."""
        return rewrite_images(raw, self.images, inline=inline)


def request_image_token_bound(request: ChatRequest) -> int:
    """The most the request's images can cost, known without fetching them."""
    return sum(image_token_bound(part.image_url.detail) for _, _, part in images_of(request))


@dataclass(slots=True)
class _Slot:
    message: int
    part: int
    source: ImagePart
    url: URL | None
    image: CheckedImage | None = None

    @property
    def where(self) -> str:
        return where_of(self.message, self.part)


class ImagePipeline:
    """Checks, fetches, caches and rewrites the images of chat requests (one per worker)."""

    def __init__(
        self,
        settings: ImageSettings,
        *,
        lookup: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_internal)
        self.cache = ImageCache(settings.cache_bytes, settings.cache_seconds, clock)
        self.shares = FetchShares(settings.per_key_fetches, settings.per_key_fetch_seconds, clock)
        self.fetcher = Fetcher(settings, self.policy, lookup=lookup, trace_configs=trace_configs)

    async def close(self) -> None:
        await self.fetcher.close()

    async def prepare(
        self,
        request: ChatRequest,
        raw: dict[str, Any],
        *,
        vision: bool,
        inline: bool,
        key: str | None = None,
    ) -> PreparedImages:
        """Check every image of ``request`` and rewrite ``raw`` for the upstream (see the
        module docstring). Raises :class:`InvalidRequest` (400), ``RequestTooLarge`` (413) or,
        when ``key`` (the API key's id) has spent its share of fetch time, ``RateLimited``
        (429); see :mod:`relaygate.media.shares`."""
        found = images_of(request)
        if not found:
            return PreparedImages(raw)
        if tracing.enabled:
            tracing.begin("relaygate.images", {"relaygate.image_count": len(found)})
        self._check_count(request, found, vision)
        budget = Budget(self.settings.max_total_bytes)
        slots = [self._slot(m, p, part, budget) for m, p, part in found]
        await self._fetch_all(slots, budget, key)
        images = tuple(_prepared(slot) for slot in slots)
        if tracing.enabled:
            tracing.end("relaygate.images", {"relaygate.image_bytes": budget.used})
        return PreparedImages(rewrite_images(raw, images, inline=inline), images)

    def _check_count(
        self, request: ChatRequest, found: list[tuple[int, int, ImagePart]], vision: bool
    ) -> None:
        if not vision:
            m, p, _ = found[0]
            raise InvalidRequest(
                f"Model {excerpt(request.model)} does not accept images (image_url parts);"
                " use a vision model",
                param=where_of(m, p),
            )
        cap = self.settings.max_images
        if len(found) > cap:
            m, p, _ = found[cap]
            raise InvalidRequest(
                f"Too many images: this request has {len(found)} image_url parts, at most"
                f" {cap} are accepted",
                param=where_of(m, p),
            )

    def _slot(self, m: int, p: int, part: ImagePart, budget: Budget) -> _Slot:
        text = part.image_url.url
        where = where_of(m, p)
        if is_data_url(text):
            data = decode_data_url(text, where, self.settings.max_bytes)
            budget.take(len(data))
            return _Slot(m, p, part, None, checked(data, where))
        return _Slot(m, p, part, check_url(text, where, self.policy))

    async def _fetch_all(self, slots: list[_Slot], budget: Budget, key: str | None) -> None:
        pending: dict[str, list[_Slot]] = {}
        for slot in slots:
            if slot.image is not None or slot.url is None:
                continue
            cached = self.cache.get(str(slot.url))
            if cached is not None:
                budget.take(cached.size)
                slot.image = cached
            else:
                pending.setdefault(str(slot.url), []).append(slot)
        if not pending:
            return
        failures: list[tuple[int, ApiError]] = []
        try:
            async with asyncio.TaskGroup() as group:
                for order, (url, same) in enumerate(pending.items()):
                    group.create_task(self._fetch_one(order, url, same, budget, key, failures))
        except* ApiError:
            pass
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]

    async def _fetch_one(
        self,
        order: int,
        url: str,
        same: list[_Slot],
        budget: Budget,
        key: str | None,
        failures: list[tuple[int, ApiError]],
    ) -> None:
        first = same[0]
        assert first.url is not None
        share = self.shares.slot(key) if key is not None else None
        try:
            data = await self.fetcher.fetch(first.url, first.where, budget, share)
            image = checked(data, first.where)
            budget.take(image.size * (len(same) - 1))
        except ApiError as exc:
            failures.append((order, exc))
            raise
        self.cache.put(url, image)
        for slot in same:
            slot.image = image


def checked(data: bytes, where: str) -> CheckedImage:
    """``data`` as a checked image, or 400 naming the part and what the bytes are instead."""
    info = sniff(data)
    if info is None:
        raise InvalidRequest(
            f"The image at {where} is {describe(data)}; only JPEG, PNG and WebP images are"
            " accepted",
            param=where,
        )
    return CheckedImage.of(data, info)


def _prepared(slot: _Slot) -> PreparedImage:
    assert slot.image is not None
    detail = slot.source.image_url.detail
    info = slot.image.info
    return PreparedImage(
        message=slot.message,
        part=slot.part,
        url=slot.source.image_url.url,
        detail=detail,
        image=slot.image,
        tokens=image_tokens(info.width, info.height, detail),
    )


def _forwarded(item: PreparedImage, inline: bool, encoded: dict[str, str]) -> str:
    if is_data_url(item.url):
        prefix = item.image.data_url_prefix()
        if item.url.startswith(prefix) and not _SPACE.search(item.url):
            return item.url
    elif not inline:
        return item.url
    url = encoded.get(item.image.digest)
    if url is None:
        url = encoded[item.image.digest] = item.image.data_url()
    return url


def rewrite_images(
    raw: dict[str, Any], images: Sequence[PreparedImage], *, inline: bool
) -> dict[str, Any]:
    """See :meth:`PreparedImages.rewrite`."""
    encoded: dict[str, str] = {}
    changes = [(item, _forwarded(item, inline, encoded)) for item in images]
    changes = [(item, url) for item, url in changes if url != item.url]
    if not changes:
        return raw
    messages = list(raw["messages"])
    contents: dict[int, list[Any]] = {}
    for item, url in changes:
        content = contents.get(item.message)
        if content is None:
            message = dict(messages[item.message])
            content = contents[item.message] = list(message["content"])
            message["content"] = content
            messages[item.message] = message
        part = dict(content[item.part])
        part["image_url"] = {**part["image_url"], "url": url}
        content[item.part] = part
    return {**raw, "messages": messages}


__all__ = [
    "ImagePipeline",
    "PreparedImage",
    "PreparedImages",
    "checked",
    "request_image_token_bound",
    "rewrite_images",
]
