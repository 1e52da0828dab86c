"""``POST /v1/messages`` (Anthropic's Messages API) and ``POST /v1/messages/count_tokens``.

The same pipeline as chat completions (:mod:`relaygate.api.pipeline`), with Anthropic's dialect:
keys in ``x-api-key`` or ``Authorization: Bearer``; errors in Anthropic's shape. To an
``anthropic`` upstream the client's body passes through with only ``model`` rewritten (and its
``anthropic-version`` and allowed ``anthropic-beta`` values); to any other it is translated
(:mod:`relaygate.protocol.anthropic_messages.decode`). Parts Anthropic bills beyond tokens are
refused unless the model allows them (:mod:`relaygate.protocol.anthropic_messages.priced`).
``count_tokens`` is passed through to an Anthropic upstream (taking a rate-limit slot, refused
to a key with nothing to spend), and estimated (and said so) for any other: it is never billed
and writes no ledger row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from relaygate.access import SCOPE_KEY as ACCESS_SCOPE
from relaygate.accounting.estimate import prompt_token_guess
from relaygate.api.http import Receive, Scope, Send, read_body, send_bytes
from relaygate.api.pipeline import Decoded, Route, credentials, serve
from relaygate.errors import InsufficientQuota, InvalidRequest, excerpt
from relaygate.media.dataurl import is_data_url
from relaygate.protocol.anthropic_messages.decode import MessagesDecoded, decode_messages
from relaygate.protocol.anthropic_messages.documents import document_tokens
from relaygate.protocol.anthropic_messages.errors import ANTHROPIC_ERRORS
from relaygate.protocol.anthropic_messages.priced import allowed_betas, check_priced_parts
from relaygate.protocol.anthropic_messages.render import MessageStream, message_body
from relaygate.protocol.assemble import Collected
from relaygate.protocol.ids import completion_id
from relaygate.protocol.validate import images_of
from relaygate.providers.base import Native, TokenUsage
from relaygate.routing.catalog import CatalogModel

if TYPE_CHECKING:
    from relaygate.access import Access
    from relaygate.accounting.admission import Ticket
    from relaygate.app import Gateway
    from relaygate.media.pipeline import PreparedImages
    from relaygate.store.records import KeyRecord

_encoder = msgspec.json.Encoder()


def native_headers(scope: Scope, betas: list[str]) -> dict[str, str]:
    """The client's ``anthropic-version``, and those of its ``anthropic-beta`` values in
    ``betas`` (the setting ``messages_betas``: others may change the price, and are dropped)."""
    found: dict[str, str] = {}
    allowed: list[str] = []
    for name, value in scope["headers"]:
        if name == b"anthropic-beta":
            allowed += allowed_betas(bytes(value).decode("latin-1"), betas)
        elif name == b"anthropic-version":
            found["anthropic-version"] = bytes(value).decode("latin-1")
    if allowed:
        found["anthropic-beta"] = ",".join(dict.fromkeys(allowed))
    return found


def _anthropic_only(model: CatalogModel) -> bool:
    return all(upstream.name == "anthropic" for upstream in model.upstreams)


def _where(place: tuple[int, int, int | None]) -> str:
    m, b, inner = place
    where = f"messages[{m}].content[{b}]"
    return where if inner is None else f"{where}.content[{inner}]"


class MessagesRoute(Route):
    """Anthropic's Messages dialect."""

    api = "messages"
    shape = ANTHROPIC_ERRORS

    key_header = b"x-api-key"

    async def load(self, gw: Gateway, key: KeyRecord, body: bytes, scope: Scope) -> Decoded:
        messages = decode_messages(body)
        native = Native(
            "messages", messages.body, native_headers(scope, gw.settings.messages_betas)
        )
        documents = document_tokens(messages.body)
        return Decoded(
            messages.internal, messages.chat, native, messages.cache_writes, extra=messages,
            prompt_bytes=len(body) + documents if documents else None,
        )  # fmt: skip

    def check(self, decoded: Decoded, model: CatalogModel) -> None:
        messages: MessagesDecoded = decoded.extra
        limit = model.settings.max_output_tokens
        asked = messages.request.max_tokens or 0
        if asked > limit:
            raise InvalidRequest(
                f"max_tokens is too large: {asked} (model {model.name!r} allows at most {limit})",
                param="max_tokens",
            )
        images = images_of(decoded.request)
        if images and not model.settings.vision:
            m, p, _ = images[0]
            place = messages.images.get((m, p))
            raise InvalidRequest(
                f"Model {model.name!r} does not accept images; use a vision model",
                param=_where(place) if place else "messages",
            )
        where = messages.untranslatable
        if where is not None and not _anthropic_only(model):
            raise InvalidRequest(
                f"{excerpt(where)} has no counterpart outside Anthropic's API, and model"
                f" {model.name!r} may be served by another provider",
                param=where,
            )
        check_priced_parts(messages.body, model.name, model.settings.allow_fields)

    def fallbacks(self, decoded: Decoded, chain: list[CatalogModel]) -> list[CatalogModel]:
        """Without the parts that only Anthropic's API has, no fallback served elsewhere."""
        if decoded.extra.untranslatable is None:
            return chain
        return [chain[0], *(m for m in chain[1:] if _anthropic_only(m))]

    def images_prepared(self, decoded: Decoded, prepared: PreparedImages) -> None:
        """Images relaygate fetched and checked go to an Anthropic upstream as those bytes,
        as they go to every other (unless ``images.forward_urls``)."""
        messages: MessagesDecoded = decoded.extra
        native = decoded.native
        if native is None or prepared.raw is decoded.raw:
            return
        body = native.body
        for image in prepared.images:
            url = prepared.raw["messages"][image.message]["content"][image.part]["image_url"]["url"]
            place = messages.images.get((image.message, image.part))
            if place is None or url == image.url or not is_data_url(url):
                continue
            head, _, data = url.partition(",")
            media_type = head[5:].split(";")[0]
            body = _replace_source(body, place, {"type": "base64", "media_type": media_type,
                                                 "data": data})  # fmt: skip
        native.body = body

    id_prefix = "msg_"

    def stream_writer(self, ticket: Ticket, decoded: Decoded) -> MessageStream:
        return MessageStream(ticket.request_id, ticket.model.name)

    def body(
        self, ticket: Ticket, collected: Collected, usage: TokenUsage, decoded: Decoded
    ) -> bytes:
        if collected.body is not None:
            return collected.body
        return _encoder.encode(message_body(ticket.request_id, ticket.model.name, collected, usage))


def _replace_source(
    body: dict[str, Any], place: tuple[int, int, int | None], source: dict[str, Any]
) -> dict[str, Any]:
    """``body`` with the image block at ``place`` given ``source`` (copied on the way down:
    the client's body is never changed in place)."""
    m, b, inner = place
    messages = list(body["messages"])
    message = dict(messages[m])
    content = list(message["content"])
    block = dict(content[b])
    if inner is None:
        block["source"] = source
    else:
        parts = list(block["content"])
        parts[inner] = {**parts[inner], "source": source}
        block["content"] = parts
    content[b] = block
    message["content"] = content
    messages[m] = message
    return {**body, "messages": messages}


MESSAGES = MessagesRoute()


messages = partial(serve, MESSAGES)


async def count_tokens(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """The prompt's tokens: an Anthropic upstream's count, else relaygate's estimate.

    The body is read within the key's share of the bodies in flight, as every route's. Every
    call, counted upstream (on relaygate's credential) or estimated, takes a rate-limit slot
    through the gate (a permit that reserves nothing and is settled at no cost: it counts
    against the key's RPM and concurrency), and a key with nothing to spend gets 402, as
    ``/v1/messages`` does."""
    key = gw.keys.authenticate(credentials(MESSAGES, scope))
    access: Access | None = scope.get(ACCESS_SCOPE)  # the request log's record
    if access is not None:
        access.key = key
    settings = gw.settings
    body = await read_body(
        scope, receive, settings.max_request_bytes,
        key.id, key.max_concurrency, settings.max_body_bytes_in_flight,
    )  # fmt: skip
    decoded = decode_messages(body, count=True)
    if access is not None:
        access.model = decoded.request.model
    model = gw.catalog.resolve(decoded.request.model, key)
    if access is not None:
        access.model, access.model_known = model.name, True
    for provider in model.upstreams:
        counter = getattr(provider, "count_tokens", None)
        if counter is not None:
            check_priced_parts(decoded.body, model.name, model.settings.allow_fields)
            await _count_upstream(gw, key, counter, provider.settings.model or model.name,
                                  decoded.body, scope, send)  # fmt: skip
            return
    async with _permit(gw, key, "estimated"):
        guess = prompt_token_guess(
            decoded.internal, model.settings.image_token_estimate, model.pixels
        )
    await send_bytes(
        send,
        200,
        _encoder.encode({"input_tokens": guess, "estimated": True}),
        headers=[(b"x-relaygate-token-count", b"estimate")],
    )


async def _count_upstream(
    gw: Gateway,
    key: KeyRecord,
    counter: Any,
    upstream_model: str,
    body: dict[str, Any],
    scope: Scope,
    send: Send,
) -> None:
    """Ask an upstream to count, holding a rate-limit slot that reserves no credit."""
    headers = native_headers(scope, gw.settings.messages_betas)
    async with _permit(gw, key, "counted upstream"):
        status, answer = await counter({**body, "model": upstream_model}, headers)
    await send_bytes(send, status, answer)


@asynccontextmanager
async def _permit(gw: Gateway, key: KeyRecord, how: str) -> AsyncIterator[None]:
    """A rate-limit slot that reserves no credit (settled at no cost), for a key with
    something to spend (402 otherwise)."""
    balance = await gw.admissions.gate.balance(key)
    if not balance.is_unlimited and balance.remaining <= 0:
        raise InsufficientQuota(
            "Insufficient quota: the key has nothing left to spend (its account's balance,"
            f" within the key's spend cap), so its prompts are not {how}"
        )
    hold = await gw.admissions.gate.admit(key, 0, 0, completion_id(None, "count_"))
    try:
        yield
    finally:
        await gw.admissions.gate.settle(hold, 0, 0)
