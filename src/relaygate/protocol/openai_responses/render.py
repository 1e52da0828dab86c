"""Rendering the one provider event stream as a Responses object, and as its streamed events.

One :class:`ResponseWriter` per answer keeps the output items in the order they began
(reasoning, message, function calls, as the upstream produced them) and, when the answer is
streamed, writes OpenAI's event sequence::

    response.created, response.in_progress
    per item: response.output_item.added
        message:   response.content_part.added, response.output_text.delta...,
                   response.output_text.done, response.content_part.done
        reasoning: response.content_part.added, response.reasoning_text.delta...,
                   response.reasoning_text.done, response.content_part.done
        function:  response.function_call_arguments.delta..., ...arguments.done
    response.output_item.done
    response.completed (or response.incomplete: max_output_tokens, content_filter)

A stream that fails once started ends with ``response.failed`` (the response, ``status:
failed``, with its ``error``). Every event carries its ``sequence_number``. The common event,
a text delta, is written from a per-item template with only the text and number filled in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from relaygate.errors import ApiError
from relaygate.protocol.assemble import decode_literals
from relaygate.protocol.ids import completion_id
from relaygate.protocol.openai_responses.decode import ResponsesCall, flat_name
from relaygate.protocol.render import encoder
from relaygate.providers.base import (
    EncodedText,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)
from relaygate.redaction import REDACTOR


def item_id(prefix: str) -> str:
    """A new id for an output item (``msg_``, ``fc_``, ``rs_``) or a response (``resp_``):
    78 random bits, as completion ids (drawn from the same pool, not a system call each)."""
    return completion_id(prefix=f"{prefix}_")


def _usage_json(usage: TokenUsage) -> bytes:
    """:func:`usage_object`, encoded."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    return _USAGE % (
        prompt, usage.cached_tokens, usage.cache_write_tokens + usage.cache_write_1h_tokens,
        completion, usage.reasoning_tokens, prompt + completion,
    )  # fmt: skip


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    """Responses usage: cached tokens inside input, reasoning tokens inside output."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens + usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


_TEXT_EVENT = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","item_id":"%s","output_index":%d,'
    b'"content_index":0,"logprobs":[],"delta":%%s,"sequence_number":%%d}\n\n'
)
"""A text delta event, made per item into the template of its deltas (``%s``: the encoded
text, ``%d``: the sequence number)."""
_MESSAGE_OPENED = (
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":%d,"output_index":%d,'
    b'"item":{"id":"%s","type":"message","status":"in_progress","role":"assistant",'
    b'"content":[]}}\n\n'
    b"event: response.content_part.added\n"
    b'data: {"type":"response.content_part.added","sequence_number":%d,"item_id":"%s",'
    b'"output_index":%d,"content_index":0,'
    b'"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}}\n\n'
)
"""The events that open a message item (``output_item.added``, ``content_part.added``)."""
_MESSAGE_CLOSED = (
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":%d,"item_id":"%s",'
    b'"output_index":%d,"content_index":0,"text":%s,"logprobs":[]}\n\n'
    b"event: response.content_part.done\n"
    b'data: {"type":"response.content_part.done","sequence_number":%d,"item_id":"%s",'
    b'"output_index":%d,"content_index":0,'
    b'"part":{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":%d,"output_index":%d,'
    b'"item":%s}\n\n'
)
"""The events that finish a message item: its text encoded once, the item as
:data:`_MESSAGE_ITEM` makes it."""
_MESSAGE_ITEM = (
    b'{"id":"%s","type":"message","status":"%s","role":"assistant",'
    b'"content":[{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}]}'
)
"""A finished message item (as :meth:`_Item.body` makes it): the item in
``response.output_item.done``, and in the final Response's ``output``."""
_ITEM_DONE = (
    b"event: response.output_item.done\n"
    b'data: {"output_index":%d,"item":%s,"type":"response.output_item.done",'
    b'"sequence_number":%d}\n\n'
)
"""``response.output_item.done`` of a reasoning or function call item (the fields in the order
:meth:`ResponseWriter._event` writes them)."""
_IN_PROGRESS = (
    b'{"id":%s,"object":"response","created_at":%d,"status":"in_progress","error":null,'
    b'"incomplete_details":null,"output":[],"usage":null,'
)
"""The Response object's changing part while in progress (as :meth:`ResponseWriter._state`)."""
_FINISHED = (
    b'{"id":%s,"object":"response","created_at":%d,"status":"%s","error":null,'
    b'"incomplete_details":%s,"output":[%s],"usage":%s,"completed_at":%d,'
)
"""The Response object's changing part once completed or incomplete (as
:meth:`ResponseWriter._state`): the output items each encoded once, when they finished."""
_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d},'
    b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
)
"""The usage (as :func:`usage_object`)."""
_STARTED = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":%d,'
    b'"response":%s}\n\n'
    b'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":%d,'
    b'"response":%s}\n\n'
)
"""``response.created`` and ``response.in_progress``: the same snapshot, numbered in turn."""
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class _Item:
    kind: str
    """``message``, ``reasoning`` or ``function_call``."""
    id: str
    index: int
    text: list[str] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    namespace: str | None = None
    done: bool = False
    template: bytes = b""
    """The item's text delta event (:data:`_TEXT_EVENT`; messages, when streamed)."""
    json: bytes = b""
    """The finished item, encoded when its stream closed it (saying ``json_status``)."""
    json_status: str = ""

    def full_text(self) -> str:
        if self.encoded:
            self.text += decode_literals(self.encoded)
            self.encoded = []
        return "".join(self.text)

    def body(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            part = {
                "type": "output_text",
                "text": self.full_text(),
                "annotations": [],
                "logprobs": [],
            }
            content = [part] if status != "in_progress" else []
            return {
                "id": self.id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": content,
            }
        if self.kind == "reasoning":
            item: dict[str, Any] = {"id": self.id, "type": "reasoning", "summary": []}
            if status != "in_progress":
                item["content"] = [{"type": "reasoning_text", "text": self.full_text()}]
            return item
        call: dict[str, Any] = {
            "id": self.id,
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.full_text() if status != "in_progress" else "",
        }
        if self.namespace:
            call["namespace"] = self.namespace
        return call


class ResponseWriter:
    """The Responses rendering of one answer (see the module docstring)."""

    def __init__(
        self,
        call: ResponsesCall,
        response_id: str,
        model: str,
        created_at: int,
        stream: bool,
        stored: bool = False,
    ) -> None:
        self.call = call
        self.stored = stored
        self.id = response_id
        self.model = model
        self.created_at = created_at
        self.stream = stream
        self.seq = 0
        self.items: list[_Item] = []
        self.open: _Item | None = None
        """The message or reasoning item receiving deltas (function calls stay open apart)."""
        self.calls: dict[int, _Item] = {}
        self.finish: str | None = None
        self.usage: TokenUsage | None = None
        self._names = (
            {flat_name(ns, tool.name): (ns, tool.name) for ns, tool in call.tools if ns}
            if call.tools
            else {}
        )
        self._id_json = encoder.encode(response_id)
        self._settings_json: bytes | None = None

    # --- events ------------------------------------------------------------------------------

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload["type"] = kind
        payload["sequence_number"] = self.seq
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + encoder.encode(payload) + b"\n\n"

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        snapshot = self.response_bytes("in_progress")
        seq = self.seq
        self.seq = seq + 2
        return _STARTED % (seq, snapshot, seq + 1, snapshot)

    def feed(self, event: Event) -> bytes | None:
        """Take one provider event; the stream's bytes for it (``None``: nothing to send yet,
        or not streaming)."""
        kind = type(event)
        if kind is EncodedText:
            return self._text(None, event.literals)  # type: ignore[union-attr]
        if kind is TextDelta:
            if event.index:  # type: ignore[union-attr]
                return None  # Responses has one answer (no ``n``)
            return self._text(event.text, None)  # type: ignore[union-attr]
        if kind is ReasoningDelta and not event.index:  # type: ignore[union-attr]
            return self._reasoning(event.text)  # type: ignore[union-attr]
        if kind is ToolCallDelta and not event.index:  # type: ignore[union-attr]
            return self._tool(event)  # type: ignore[arg-type]
        if kind is Finish and not event.index:  # type: ignore[union-attr]
            self.finish = event.reason  # type: ignore[union-attr]
        elif kind is TokenUsage:
            self.usage = event  # type: ignore[assignment]
        return None

    def _item_id(self, prefix: str) -> str:
        """An output item's id: the response's own random part and the item's place (unique
        as the response's id is, without drawing random bits per item)."""
        _, _, tail = self.id.partition("_")
        return f"{prefix}_{tail or self.id}_{len(self.items)}"

    def _begin(self, kind: str, prefix: str) -> tuple[_Item, bytes]:
        """A new item; the bytes that finish the open message or reasoning item first."""
        out = self._close(self.open) if self.open is not None else b""
        item = _Item(kind, self._item_id(prefix), len(self.items))
        self.items.append(item)
        return item, out

    def _added(self, item: _Item) -> bytes:
        payload = {"output_index": item.index, "item": item.body("in_progress")}
        return self._event("response.output_item.added", payload)

    def _text(self, text: str | None, literals: list[bytes] | None) -> bytes | None:
        item = self.open
        out = b""
        if item is None or item.kind != "message":
            item, out = self._begin("message", "msg")
            self.open = item
            if self.stream:
                seq, index, id_ = self.seq, item.index, item.id.encode()
                self.seq = seq + 2
                out += _MESSAGE_OPENED % (seq, index, id_, seq + 1, id_, index)
                item.template = _TEXT_EVENT % (id_, index)
        seq = self.seq
        if literals is not None:
            item.encoded += literals
            if not self.stream:
                return None
            # one formatting call per delta, in C: the literals are already JSON strings
            self.seq = seq + len(literals)
            deltas = map(item.template.__mod__, zip(literals, range(seq, self.seq), strict=True))
            return out + b"".join(deltas)
        assert text is not None
        if item.encoded:
            item.full_text()
        item.text.append(text)
        if not self.stream:
            return None
        self.seq = seq + 1
        return out + item.template % (encoder.encode(text), seq)

    def _part_added(self, item: _Item, part: dict[str, Any]) -> bytes:
        payload = {"item_id": item.id, "output_index": item.index, "content_index": 0, "part": part}
        return self._event("response.content_part.added", payload)

    def _reasoning(self, text: str) -> bytes | None:
        item = self.open
        out = b""
        if item is None or item.kind != "reasoning":
            item, out = self._begin("reasoning", "rs")
            self.open = item
            if self.stream:
                out += self._added(item) + self._part_added(
                    item, {"type": "reasoning_text", "text": ""}
                )
        item.text.append(text)
        if not self.stream:
            return None
        payload = {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": 0,
            "delta": text,
        }
        return out + self._event("response.reasoning_text.delta", payload)

    def _tool(self, event: ToolCallDelta) -> bytes | None:
        item = self.calls.get(event.tool_index)
        out = b""
        if item is None:
            item, out = self._begin("function_call", "fc")
            self.open = None
            self.calls[event.tool_index] = item
            item.call_id = event.id or item_id("call")
            item.namespace, item.name = self._names.get(event.name or "", (None, event.name or ""))
            if self.stream:
                out += self._added(item)
        elif event.name and not item.name:
            item.namespace, item.name = self._names.get(event.name, (None, event.name))
        if event.arguments:
            item.text.append(event.arguments)
            if self.stream:
                payload = {"item_id": item.id, "output_index": item.index, "delta": event.arguments}
                out += self._event("response.function_call_arguments.delta", payload)
        return out if self.stream else None

    def _close(self, item: _Item) -> bytes:
        """The events that finish ``item``."""
        item.done = True
        if self.open is item:
            self.open = None
        if not self.stream:
            return b""
        status = "incomplete" if self.finish in _INCOMPLETE else "completed"
        where = {"item_id": item.id, "output_index": item.index}
        text = item.full_text()
        out = b""
        item.json_status = status
        if item.kind == "message":
            seq, index, id_, encoded = self.seq, item.index, item.id.encode(), encoder.encode(text)
            self.seq = seq + 3
            item.json = _MESSAGE_ITEM % (id_, status.encode(), encoded)
            return _MESSAGE_CLOSED % (
                seq, id_, index, encoded,
                seq + 1, id_, index, encoded,
                seq + 2, index, item.json,
            )  # fmt: skip
        if item.kind == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            out += self._event(
                "response.reasoning_text.done", {**where, "content_index": 0, "text": text}
            )
            out += self._event(
                "response.content_part.done", {**where, "content_index": 0, "part": part}
            )
        else:
            out += self._event(
                "response.function_call_arguments.done", {**where, "arguments": text}
            )
        item.json = encoder.encode(item.body(status))
        return out + _ITEM_DONE % (item.index, item.json, self._next())

    # --- the end -----------------------------------------------------------------------------

    def status(self) -> str:
        return "incomplete" if self.finish in _INCOMPLETE else "completed"

    def end(self, usage: TokenUsage) -> bytes:
        """Every open item finished, then ``response.completed`` (or ``.incomplete``)."""
        out = b"".join([self._close(item) for item in self.items if not item.done])
        status = self.status()
        kind = b"response.%s" % status.encode()
        return out + b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n' % (
            kind,
            kind,
            self._next(),
            self.response_bytes(status, usage),
        )

    def failed(self, error: ApiError, usage: TokenUsage | None) -> bytes:
        """``response.failed``: the stream broke off after it started."""
        final = self.response("failed", usage)
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        final["error"] = {"code": code, "message": REDACTOR.redact_configured(error.message)}
        return self._event("response.failed", {"response": final})

    def output(self) -> list[dict[str, Any]]:
        """The output items, each finished."""
        status = self.status()
        return [item.body(status) for item in self.items]

    def _next(self) -> int:
        seq = self.seq
        self.seq = seq + 1
        return seq

    def response(self, status: str, usage: TokenUsage | None = None) -> dict[str, Any]:
        """The Response object (``output`` empty while in progress)."""
        return {**self._state(status, usage), **self._settings()}

    def response_bytes(self, status: str, usage: TokenUsage | None = None) -> bytes:
        """:meth:`response`, encoded: the request's part is encoded once per answer, the
        snapshot in progress (``response.created``, ``.in_progress``) and the finished one
        from templates, with each output item encoded once."""
        settings = self._settings_json
        if settings is None:
            settings = self._settings_json = encoder.encode(self._settings())
        if status == "completed" or status == "incomplete":
            details = (
                b'{"reason":"%s"}' % _INCOMPLETE[self.finish].encode()
                if status == "incomplete" and self.finish
                else b"null"
            )
            output = b",".join([self._item_json(item, status) for item in self.items])
            return (
                _FINISHED % (
                    self._id_json, self.created_at, status.encode(), details, output,
                    b"null" if usage is None else _usage_json(usage), int(time.time()),
                )
                + settings[1:]
            )  # fmt: skip
        if status == "in_progress" and usage is None:
            return _IN_PROGRESS % (self._id_json, self.created_at) + settings[1:]
        state = encoder.encode(self._state(status, usage))
        return state[:-1] + b"," + settings[1:]

    @staticmethod
    def _item_json(item: _Item, status: str) -> bytes:
        """An output item of the finished response, encoded (once, when the stream closed
        it saying the same status)."""
        if item.json and item.json_status == status:
            return item.json
        return encoder.encode(item.body(status))

    def _state(self, status: str, usage: TokenUsage | None) -> dict[str, Any]:
        """The part of the Response object that changes as the answer goes on."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": _INCOMPLETE[self.finish]}
            if status == "incomplete" and self.finish
            else None,
            "output": self.output() if status != "in_progress" else [],
            "usage": usage_object(usage) if usage is not None else None,
        }
        if status == "completed" or status == "incomplete":
            body["completed_at"] = int(time.time())
        return body

    def _settings(self) -> dict[str, Any]:
        """The part of the Response object the request decides."""
        request = self.call.request
        reasoning = request.reasoning
        text = request.text
        return {
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {
                "effort": reasoning.effort if reasoning else None,
                "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
            },
            "store": self.stored,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": (text.format if text and text.format else {"type": "text"})},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": self.call.raw.get("tools") or [],
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "truncation": request.truncation or "disabled",
            "user": request.user,
            "metadata": request.metadata or {},
        }
