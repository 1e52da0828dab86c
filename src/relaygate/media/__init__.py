"""Image inputs: fetched and checked without SSRF, measured, cached and rewritten for upstreams.

The request path needs one object, :class:`ImagePipeline` (one per worker, closed on shutdown),
and one call, :meth:`ImagePipeline.prepare`, made before any upstream call::

    prepared = await pipeline.prepare(request, raw, vision=model_vision, inline=True)
    prepared.raw       # the body to forward, images rewritten
    prepared.tokens    # estimated image prompt tokens (OpenAI's tile formula)

Modules: :mod:`~relaygate.media.addresses` (which addresses may be reached),
:mod:`~relaygate.media.fetch` (the SSRF-safe downloader), :mod:`~relaygate.media.dataurl`,
:mod:`~relaygate.media.formats` (magic bytes and dimensions), :mod:`~relaygate.media.tokens`,
:mod:`~relaygate.media.cache`, :mod:`~relaygate.media.shares` (each key's share of the fetches)
and :mod:`~relaygate.media.pipeline`.
"""

from relaygate.media.addresses import AddressPolicy, parse_allow_rule, refusal_reason
from relaygate.media.cache import ImageCache
from relaygate.media.fetch import Lookup, PolicyResolver, system_lookup
from relaygate.media.formats import CheckedImage, ImageInfo, sniff
from relaygate.media.pipeline import (
    ImagePipeline,
    PreparedImage,
    PreparedImages,
    request_image_token_bound,
    rewrite_images,
)
from relaygate.media.tokens import MAX_IMAGE_TOKENS, image_token_bound, image_tokens

__all__ = [
    "MAX_IMAGE_TOKENS",
    "AddressPolicy",
    "CheckedImage",
    "ImageCache",
    "ImageInfo",
    "ImagePipeline",
    "Lookup",
    "PolicyResolver",
    "PreparedImage",
    "PreparedImages",
    "image_token_bound",
    "image_tokens",
    "parse_allow_rule",
    "refusal_reason",
    "request_image_token_bound",
    "rewrite_images",
    "sniff",
    "system_lookup",
]
