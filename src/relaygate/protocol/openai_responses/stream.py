"""A Responses stream as the pipeline renders it: translated events through
:class:`~relaygate.protocol.openai_responses.render.ResponseWriter`, or, when the upstream
speaks Responses itself, its bytes as they came.

Either way, :meth:`ResponsesStream.output` gives the answer's id and output items afterwards
(for storing it): the writer's own, or those of the upstream's final event, read from the
relayed bytes only when asked to (``capture``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from relaygate.errors import ApiError
from relaygate.protocol.assemble import Collected
from relaygate.protocol.openai_responses.render import ResponseWriter
from relaygate.protocol.render import SSE_KEEPALIVE, encoder
from relaygate.providers.base import Event, Passthrough, TokenUsage
from relaygate.providers.reading import LineSplitter
from relaygate.redaction import REDACTOR

_FINAL = (b'"response.completed"', b'"response.incomplete"')


class _FinalEvent(msgspec.Struct):
    response: dict[str, Any] | None = None


_final_decoder = msgspec.json.Decoder(_FinalEvent)
_body_decoder = msgspec.json.Decoder(dict[str, Any])

Answer = tuple[str, list[dict[str, Any]], dict[str, Any]]
"""A finished answer: its id, its output items, and its Response object without ``output``."""


def answer_of(response: dict[str, Any] | None) -> Answer | None:
    if response is None:
        return None
    output, answer_id = response.get("output"), response.get("id")
    if not isinstance(answer_id, str) or not answer_id or not isinstance(output, list):
        return None
    rest = {name: value for name, value in response.items() if name != "output"}
    return answer_id, output, rest


class ResponsesStream:
    """The pipeline's stream renderer for ``POST /v1/responses`` (see the module docstring)."""

    keepalive = SSE_KEEPALIVE

    def __init__(self, writer: ResponseWriter, capture: bool, max_line: int) -> None:
        self.writer = writer
        self.native = False
        self.started = False
        self.capture = capture
        self._lines = LineSplitter(max_line, "upstream") if capture else None
        self.final: dict[str, Any] | None = None
        self.usage: TokenUsage | None = None
        self._head = b""
        """The start events, numbered before the first event and sent with its bytes."""

    def _start(self) -> bytes:
        """``response.created`` and ``.in_progress`` (numbered first), if not sent yet."""
        if not self.started:
            self.started = True
            return self.writer.start()
        head, self._head = self._head, b""
        return head

    def event(self, event: Event) -> bytes | None:
        if type(event) is Passthrough:
            self.native = self.started = True
            if self._lines is not None:
                self._read(event.data)
            return event.data
        if self.native:
            return None  # the usage read from the relayed bytes
        if not self.started:  # the start events come first, also in sequence numbers
            self._head = self._start()
        data = self.writer.feed(event)
        if data is None or not self._head:
            return data
        return self._start() + data

    def _read(self, data: bytes) -> None:
        assert self._lines is not None
        for line in self._lines.feed(data):
            if line.startswith(b"data:") and any(f in line[:120] for f in _FINAL):
                try:
                    self.final = _final_decoder.decode(line[5:]).response
                except msgspec.MsgspecError:
                    self.final = None

    def tail(self, collected: Collected, prompt_guess: int) -> list[bytes]:
        if self.native:
            return []
        self.usage = usage = collected.usage_or_estimate(prompt_guess)
        return [self._start() + self.writer.end(usage)]

    def error(self, error: ApiError) -> bytes:
        if self.native:
            if getattr(error, "relayed", False):
                return b""
            message = REDACTOR.redact_configured(error.message)
            payload = {"type": "error", "code": "server_error", "message": message}
            return b"event: error\ndata: " + encoder.encode(payload) + b"\n\n"
        return self._start() + self.writer.failed(error, None)

    def output(self) -> Answer | None:
        """The answer (:data:`Answer`); ``None`` if a relayed answer's were not read."""
        if not self.native:
            writer = self.writer
            response = writer.response(writer.status(), self.usage)
            return answer_of(response)
        return answer_of(self.final)


def native_output(body: bytes) -> Answer | None:
    """The answer in an upstream's non-streamed Responses body."""
    try:
        return answer_of(_body_decoder.decode(body))
    except msgspec.MsgspecError:
        return None
