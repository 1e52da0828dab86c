"""``POST /v1/responses``: OpenAI's Responses API, through the one pipeline.

The request is decoded into the internal request (:mod:`relaygate.protocol.openai_responses`)
and keeps the client's own body for upstreams that speak Responses (OpenAI; Azure with its
``responses`` option), which get it with ``model`` rewritten. ``previous_response_id`` is
resolved here, from relaygate's own store (``stored_responses``), and only for the key's own
account; an answer is stored (before its end reaches the client, so that the next request can
continue it at once) unless the request says ``store: false``. The answer's ``store`` says
which, a passed-through one's too (its upstream, asked not to store, says ``false``:
:mod:`relaygate.protocol.openai_responses.stored`).

Only the stored history's size is read before admission: it is added to the body's for the
reservation (``Decoded.prompt_bytes``: it is sent upstream), and a history that with the
request's body exceeds ``max_request_bytes`` is refused (400) without being read. The history
itself is read once the request is admitted (a key without credit or over its rate limit
causes no such read), its bytes held among the bodies in flight
(``max_body_bytes_in_flight``: 503 when the process holds too many).
"""

from __future__ import annotations

import re
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from relaygate.accounting.estimate import prompt_token_guess
from relaygate.api.http import BODIES, Receive, Scope, Send, header, send_bytes
from relaygate.api.pipeline import Decoded, Route, check_for_model, serve
from relaygate.errors import InvalidRequest, NotFound, excerpt
from relaygate.protocol.assemble import decode_literals
from relaygate.protocol.openai_responses.decode import (
    ImagePlaces,
    ResponsesCall,
    decode_responses_request,
    to_chat,
)
from relaygate.protocol.openai_responses.items import InputImage, MessageItem, check_item
from relaygate.protocol.openai_responses.render import ResponseWriter
from relaygate.protocol.openai_responses.stored import stored_body
from relaygate.protocol.openai_responses.stream import (
    Answer,
    ResponsesStream,
    answer_of,
    native_output,
)
from relaygate.protocol.render import encoder
from relaygate.providers.base import (
    Finish,
    Native,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from relaygate.accounting.admission import Ticket
    from relaygate.app import Gateway
    from relaygate.media.pipeline import PreparedImages
    from relaygate.protocol.assemble import Collected
    from relaygate.routing.catalog import CatalogModel
    from relaygate.store.records import KeyRecord
    from relaygate.store.responses_sql import ResponseStore


_IMAGE_PARAM = re.compile(r"messages\[(\d+)\]\.content\[(\d+)\]")


class Conversation:
    """What the route keeps of one request between decoding and the end of its answer."""

    __slots__ = (
        "call",
        "history_bytes",
        "items",
        "key_id",
        "owner",
        "places",
        "positions",
        "store",
        "stream",
    )

    def __init__(self, call: ResponsesCall, items: list[dict[str, Any]], places: ImagePlaces):
        self.call = call
        self.items = items
        """The conversation's input (stored history first) as Responses items."""
        self.places = places
        self.positions: list[int | None] = []
        """Where each item is in the pass-through body's ``input`` (``None``: left out)."""
        self.owner = ""
        self.key_id = ""
        self.store = False
        """Whether the answer is stored (storage on, and not ``store: false``)."""
        self.stream: ResponsesStream | None = None
        self.history_bytes = 0
        """The size of the stored history continued (read once the request is admitted)."""


def client_items(call: ResponsesCall) -> list[dict[str, Any]]:
    """The request's input items as the client sent them (checked): what a Responses upstream
    gets, and what is stored; a string input is one user message."""
    given = call.request.input
    if isinstance(given, str):
        if not given:
            return []
        text = {"type": "input_text", "text": given}
        return [{"type": "message", "role": "user", "content": [text]}]
    return list(given)


def _unreadable_reasoning(item: dict[str, Any]) -> bool:
    return item.get("type") == "reasoning" and not item.get("encrypted_content")


def owner_of(key: KeyRecord) -> str:
    """Whose stored responses a key may continue: its account's (its own without one)."""
    return key.account_id or key.id


class ResponsesRoute(Route):
    """OpenAI's Responses dialect."""

    api = "responses"
    id_prefix = "resp_"

    def decode(self, body: bytes, scope: Scope) -> Decoded:
        return self._decoded(decode_responses_request(body), [])

    async def load(self, gw: Gateway, key: KeyRecord, body: bytes, scope: Scope) -> Decoded:
        call = decode_responses_request(body)
        asked = call.request.previous_response_id
        owner = owner_of(key)
        decoded = self._decoded(call, [])
        decoded.prompt_bytes = len(body)
        if asked is not None:
            # Only the history's size is read before admission (the request admitted includes
            # it); the history itself is read once admitted (:meth:`admitted`).
            size = await self._responses(gw).size(asked, owner)
            self._check_stored(gw, asked, len(body), size)
            assert size is not None
            decoded.prompt_bytes += size
            decoded.extra.history_bytes = size
            decoded.deferred = True
        self._prepare(gw, decoded, owner, key.id)
        return decoded

    async def admitted(self, gw: Gateway, decoded: Decoded, ticket: Ticket) -> None:
        """Read the stored history of a continued conversation, its bytes held among the
        bodies in flight (503 when the process holds too many), and decode the request
        with it; the model's checks are made again (400 for what the history holds)."""
        conversation: Conversation = decoded.extra
        call = conversation.call
        settings = gw.settings
        asked = call.request.previous_response_id
        assert asked is not None
        assert decoded.prompt_bytes is not None
        body_size = decoded.prompt_bytes - conversation.history_bytes
        BODIES.hold(conversation.history_bytes, settings.max_body_bytes_in_flight)
        room = settings.max_request_bytes - body_size
        found = await self._responses(gw).load_sized(asked, conversation.owner, max(room, 0))
        self._check_stored(gw, asked, body_size, None if found is None else found.size)
        assert found is not None
        assert found.items is not None  # it was not too long
        loaded = self._decoded(call, found.items)
        decoded.request, decoded.raw, decoded.native = loaded.request, loaded.raw, loaded.native
        decoded.extra = loaded.extra
        loaded.extra.history_bytes = found.size
        self._prepare(gw, decoded, conversation.owner, conversation.key_id)
        self.check(decoded, ticket.model)
        model = ticket.model
        ticket.prompt_guess = prompt_token_guess(
            decoded.request, model.settings.image_token_estimate, model.pixels
        )

    @staticmethod
    def _responses(gw: Gateway) -> ResponseStore:
        if gw.responses is None:
            raise InvalidRequest(
                "previous_response_id needs stored responses, which are off on this gateway"
                " (setting stored_responses); send the whole conversation as input",
                param="previous_response_id",
            )
        return gw.responses

    @staticmethod
    def _check_stored(gw: Gateway, asked: str, body_size: int, size: int | None) -> None:
        """400 for a stored conversation not found (``size`` ``None``: unknown, expired or
        another account's), or too long to continue with a body of ``body_size`` bytes."""
        if size is None:
            raise InvalidRequest(
                f"Previous response with id {excerpt(asked)} not found: it is unknown,"
                " expired, or not this account's",
                param="previous_response_id",
            )
        limit = gw.settings.max_request_bytes
        if size + body_size > limit:
            raise InvalidRequest(
                f"The conversation is too long to continue: its stored history"
                f" ({size} bytes) and this request ({body_size} bytes) are more than"
                f" {limit} bytes (setting max_request_bytes); start a new conversation",
                param="previous_response_id",
            )

    def _prepare(self, gw: Gateway, decoded: Decoded, owner: str, key_id: str) -> None:
        call = decoded.extra.call
        conversation: Conversation = decoded.extra
        conversation.owner = owner
        conversation.key_id = key_id
        conversation.store = gw.responses is not None and call.request.store is not False
        if conversation.store and decoded.native is not None and call.request.reasoning:
            include = list(decoded.native.body.get("include") or [])
            if "reasoning.encrypted_content" not in include:
                decoded.native.body["include"] = [*include, "reasoning.encrypted_content"]

    def _decoded(self, call: ResponsesCall, history: list[dict[str, Any]]) -> Decoded:
        items = [check_item(raw, "previous_response_id") for raw in history] + call.items
        places: ImagePlaces = {}
        request, raw = to_chat(call, items, places)
        dicts = history + client_items(call)
        # reasoning a translated answer stored has no encrypted content: a Responses upstream
        # (asked not to store) could not resolve it, so it is not sent
        sent: list[dict[str, Any]] = []
        positions: list[int | None] = []
        for item in dicts:
            positions.append(None if _unreadable_reasoning(item) else len(sent))
            if positions[-1] is not None:
                sent.append(item)
        body = {**call.raw, "input": sent}
        body.pop("previous_response_id", None)
        conversation = Conversation(call, dicts, places)
        conversation.positions = positions
        return Decoded(request, raw, Native("responses", body), extra=conversation)

    def check(self, decoded: Decoded, model: CatalogModel) -> None:
        conversation: Conversation = decoded.extra
        if not model.settings.vision:
            for i, item in enumerate(conversation.call.items):
                if isinstance(item, MessageItem) and not isinstance(item.content, str):
                    for p, part in enumerate(item.content):
                        if isinstance(part, InputImage):
                            raise InvalidRequest(
                                f"Model {model.name!r} does not accept images (input_image"
                                " parts); use a vision model",
                                param=f"input[{i}].content[{p}]",
                            )
        asked = conversation.call.request.max_output_tokens
        limit = model.settings.max_output_tokens
        if asked is not None and asked > limit:
            raise InvalidRequest(
                f"max_output_tokens is too large: {asked} (model {model.name!r} allows at most"
                f" {limit})",
                param="max_output_tokens",
            )
        check_for_model(decoded.request, model)

    def client_param(self, decoded: Decoded, param: str) -> str:
        """``messages[m].content[p]`` (an image the media pipeline refused) as the input item
        it came from; ``previous_response_id`` for one of a stored conversation."""
        match = _IMAGE_PARAM.match(param)
        conversation: Conversation = decoded.extra
        place = match and conversation.places.get((int(match[1]), int(match[2])))
        if not place:
            return param
        i, p = place
        i -= len(conversation.items) - len(conversation.call.items)
        return f"input[{i}].content[{p}]" if i >= 0 else "previous_response_id"

    def output_limited(self, decoded: Decoded, limit: int) -> None:
        if decoded.native is not None:
            decoded.native.body = {**decoded.native.body, "max_output_tokens": limit}

    def images_prepared(self, decoded: Decoded, prepared: PreparedImages) -> None:
        """Images relaygate fetched and checked reach a Responses upstream as those bytes, as
        they reach every other (unless ``images.forward_urls``)."""
        conversation: Conversation = decoded.extra
        native = decoded.native
        if native is None or prepared.raw is decoded.raw:
            return
        items = list(native.body["input"])
        for image in prepared.images:
            place = conversation.places.get((image.message, image.part))
            if place is None or conversation.positions[place[0]] is None:
                continue
            url = prepared.raw["messages"][image.message]["content"][image.part]["image_url"]
            i, p = conversation.positions[place[0]], place[1]
            assert i is not None
            item = dict(items[i])
            content = list(item["content"])
            content[p] = {**content[p], "image_url": url["url"]}
            item["content"] = content
            items[i] = item
        native.body = {**native.body, "input": items}

    def _writer(self, ticket: Ticket, decoded: Decoded, stream: bool) -> ResponseWriter:
        conversation: Conversation = decoded.extra
        return ResponseWriter(
            conversation.call,
            ticket.request_id,
            ticket.model.name,
            int(time.time()),
            stream,
            stored=conversation.store,
        )

    def stream_writer(self, ticket: Ticket, decoded: Decoded) -> ResponsesStream:
        conversation: Conversation = decoded.extra
        writer = self._writer(ticket, decoded, True)
        conversation.stream = ResponsesStream(writer, conversation.store, 32 * 1024 * 1024)
        return conversation.stream

    def body(
        self, ticket: Ticket, collected: Collected, usage: TokenUsage, decoded: Decoded
    ) -> bytes:
        if collected.body is not None:  # passed through: it says what relaygate did
            return stored_body(collected.body, decoded.extra.store)
        writer = self._writer(ticket, decoded, False)
        replay(writer, collected)
        return encoder.encode(writer.response(writer.status(), usage))

    async def finish(
        self, gw: Gateway, ticket: Ticket, decoded: Decoded, collected: Collected | None
    ) -> None:
        """Store the answer (before its end reaches the client)."""
        conversation: Conversation = decoded.extra
        if not conversation.store or gw.responses is None:
            return
        found: Answer | None
        if conversation.stream is not None:
            found = conversation.stream.output()
        elif collected is not None and collected.body is not None:
            found = native_output(collected.body)
        elif collected is not None:
            writer = self._writer(ticket, decoded, False)
            replay(writer, collected)
            usage = collected.usage_or_estimate(ticket.prompt_guess)
            found = answer_of(writer.response(writer.status(), usage))
        else:
            found = None
        if found is None:
            conversation.store = False
            return
        response_id, output, response = found
        response["store"] = True  # (a Responses upstream's says false: it was asked not to)
        conversation.store = False  # until it is saved
        await gw.responses.save(
            response_id,
            conversation.owner,
            conversation.key_id,
            ticket.model.name,
            conversation.items + output,
            response=response,
            outputs=len(output),
        )
        conversation.store = True


def replay(writer: ResponseWriter, collected: Collected) -> None:
    """Feed ``writer`` a non-streamed answer: reasoning, then text, then tool calls."""
    state = collected.choices.get(0)
    if state is None:
        return
    if state.reasoning:
        writer.feed(ReasoningDelta("".join(state.reasoning)))
    text = "".join(state.text + decode_literals(state.encoded or []))
    if text:
        writer.feed(TextDelta(text))
    for index in sorted(state.tools):
        call = state.tools[index]
        function = call.function
        writer.feed(
            ToolCallDelta(
                index,
                id=call.id,
                name=function.name if function else None,
                arguments=function.arguments if function else "",
            )
        )
    if state.finish:
        writer.feed(Finish(state.finish))


RESPONSES = ResponsesRoute()

PREFIX = "/v1/responses/"
"""``GET`` and ``DELETE /v1/responses/{id}``: a stored response."""


def _not_found(response_id: str) -> NotFound:
    """One answer for an unknown, expired or another account's id (ids cannot be probed)."""
    return NotFound(
        f"Response with id {excerpt(response_id)} not found: it is unknown, expired, deleted"
        " or not this account's (responses are kept only with the setting stored_responses)",
        param="response_id",
    )


async def retrieve(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """The stored Response object, for the key's own account only."""
    key = gw.keys.authenticate(header(scope, b"authorization"))
    response_id = scope["path"].rstrip("/")[len(PREFIX) :]
    found = None
    if gw.responses is not None and response_id:
        found = await gw.responses.get(response_id, owner_of(key))
    if found is None:
        raise _not_found(response_id)
    await send_bytes(send, 200, encoder.encode(found))


async def delete(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Delete a stored response of the key's own account: it can no longer be retrieved nor
    continued."""
    key = gw.keys.authenticate(header(scope, b"authorization"))
    response_id = scope["path"].rstrip("/")[len(PREFIX) :]
    deleted = False
    if gw.responses is not None and response_id:
        deleted = await gw.responses.delete(response_id, owner_of(key))
    if not deleted:
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    await send_bytes(send, 200, encoder.encode(body))


responses = partial(serve, RESPONSES)
