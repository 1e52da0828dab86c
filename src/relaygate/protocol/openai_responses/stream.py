"""A Responses stream as the pipeline renders it: translated events through
:class:`~relaygate.protocol.openai_responses.render.ResponseWriter`, or, when the upstream
speaks Responses itself, its bytes as they came.

Either way, :meth:`ResponsesStream.output` gives the answer's id and output items afterwards
(for storing it): the writer's own, or those of the upstream's final event, read from the
relayed bytes only when the answer is kept. Relayed bytes go out by whole lines, and the events
among them that carry the Response object say whether relaygate keeps it
(:mod:`relaygate.protocol.openai_responses.stored`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from relaygate.errors import ApiError
from relaygate.protocol.assemble import Collected
from relaygate.protocol.openai_responses.render import ResponseWriter
from relaygate.protocol.openai_responses.stored import stored_line
from relaygate.protocol.render import SSE_KEEPALIVE, encoder
from relaygate.providers.base import Event, Passthrough, Started, TokenUsage
from relaygate.redaction import REDACTOR

_FINAL = (b'"response.completed"', b'"response.incomplete"')
_CARRIES = b'"response"'
"""In a relayed read, where an event may carry the Response object."""


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
    """The pipeline's stream renderer for ``POST /v1/responses`` (see the module docstring).

    :attr:`event` is the function of the stream's state: at first :meth:`_first`, which
    decides; then the writer's own ``feed`` (no call of this class's per event), or
    :meth:`_relay` for the upstream's bytes."""

    keepalive = SSE_KEEPALIVE

    def __init__(self, writer: ResponseWriter, stored: bool, max_line: int) -> None:
        self.writer = writer
        self.native = False
        self.started = False
        self.stored = stored
        """Whether relaygate keeps the answer: what its Response objects say, and whether a
        relayed answer's final one is read (:meth:`output`)."""
        self.max_line = max_line
        self.final: dict[str, Any] | None = None
        self.usage: TokenUsage | None = None
        self._rest: list[bytes] = []
        """A relayed line not finished yet (its pieces): it goes out with its end."""
        self._rest_size = 0
        self.event: Callable[[Event], bytes | None] = self._first

    def _start(self) -> bytes:
        """``response.created`` and ``.in_progress`` (numbered first), if not sent yet."""
        if self.started:
            return b""
        self.started = True
        return self.writer.start()

    def _first(self, event: Event) -> bytes | None:
        """The first events: the upstream's bytes make the stream a relay; the first other
        event after :class:`Started` begins the translated one (its start events first, also
        in sequence numbers)."""
        kind = type(event)
        if kind is Passthrough:
            self.native = self.started = True
            self.event = self._relay
            return self._relay(event)
        if kind is Started:
            return None
        self.event = feed = self.writer.feed
        start = self._start()
        data = feed(event)
        return start if data is None else start + data

    def _relay(self, event: Event) -> bytes | None:
        """A relayed read, up to its last full line (the rest goes with the next): the
        events that carry the Response object say what relaygate keeps."""
        if type(event) is not Passthrough:
            return None  # the usage, read from the relayed bytes
        data: bytes = event.data
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._rest.append(data)
            self._rest_size += len(data)
            if self._rest_size <= self.max_line:
                return None
            # (the upstream's reader refuses such a line; it is not held for ever)
            data = b"".join(self._rest)
            self._rest, self._rest_size = [], 0
            return data
        if self._rest:
            data = b"".join(self._rest) + data
            end += self._rest_size
            self._rest, self._rest_size = [], 0
        if end < len(data):
            self._rest, self._rest_size = [data[end:]], len(data) - end
            data = data[:end]
        return self._carried(data) if _CARRIES in data else data

    def _carried(self, data: bytes) -> bytes:
        """``data`` (whole lines), each event carrying the Response object saying what
        relaygate keeps (and the final one read, when the answer is kept)."""
        out: list[bytes] = []
        done = 0
        at = data.find(_CARRIES)
        while at >= 0:
            begins = data.rfind(b"\n", 0, at) + 1
            ends = data.find(b"\n", at)
            if ends < 0:
                ends = len(data)
            line = data[begins:ends]
            if line.startswith(b"data:"):
                changed = stored_line(line, self.stored)
                if self.stored and any(f in line[:120] for f in _FINAL):
                    self._read_final(changed)
                if changed is not line:
                    out += (data[done:begins], changed)
                    done = ends
            at = data.find(_CARRIES, ends)
        if not out:
            return data
        out.append(data[done:])
        return b"".join(out)

    def _read_final(self, line: bytes) -> None:
        try:
            self.final = _final_decoder.decode(line[5:]).response
        except msgspec.MsgspecError:
            self.final = None

    def tail(self, collected: Collected, prompt_guess: int) -> list[bytes]:
        if self.native:
            rest, self._rest = self._rest, []
            return rest
        self.usage = usage = collected.usage_or_estimate(prompt_guess)
        return [self._start() + self.writer.end(usage)]

    def error(self, error: ApiError) -> bytes:
        if self.native:
            if getattr(error, "relayed", False):
                return b"".join(self._rest)  # the upstream's own failure, as it came
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
