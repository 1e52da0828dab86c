"""``POST /v1/chat/completions``: the contract's dialect on the shared pipeline
(:mod:`relaygate.api.pipeline`)."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING

from relaygate.api.http import Scope
from relaygate.api.pipeline import Decoded, Route, check_for_model, serve
from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.protocol.render import encoder
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import TokenUsage

if TYPE_CHECKING:
    from relaygate.accounting.admission import Ticket

__all__ = ["CHAT", "ChatRoute", "chat_completions", "check_for_model"]


class ChatRoute(Route):
    """Chat completions: decoded as they are (the internal request is the contract's)."""

    api = "chat"

    def decode(self, body: bytes, scope: Scope) -> Decoded:
        request, raw = decode_chat_request(body)
        return Decoded(request, raw)

    def stream_writer(self, ticket: Ticket, decoded: Decoded) -> ChunkWriter:
        options = decoded.request.stream_options
        include_usage = bool(options and options.include_usage)
        return ChunkWriter(ticket.request_id, ticket.model.name, int(time.time()), include_usage)

    def body(
        self, ticket: Ticket, collected: Collected, usage: TokenUsage, decoded: Decoded
    ) -> bytes:
        answer = collected.completion(ticket.request_id, ticket.model.name, int(time.time()), usage)
        return encoder.encode(answer)


CHAT = ChatRoute()

chat_completions = partial(serve, CHAT)
"""The route's handler (a partial: no frame of its own on the hot path)."""
