"""A Messages request decoded into the internal request (a chat-completions body).

- ``system`` (a string or text blocks), and ``role: "system"`` entries inside ``messages`` as
  recent Claude Code sends them, become system messages where they stand;
- user text and image blocks become text and ``image_url`` parts (a base64 source as a
  ``data:`` URL, so the image checks apply alike); ``tool_result`` blocks become ``tool``
  messages, placed before the rest of their turn (images inside them follow in a user message);
- assistant text and ``tool_use`` blocks become ``content`` and ``tool_calls``; thinking blocks
  are dropped (their signatures mean nothing to another vendor; an Anthropic upstream gets the
  client's own body with them intact);
- ``max_tokens`` → ``max_completion_tokens``; ``stop_sequences`` → ``stop``; client ``tools``
  → function tools; ``tool_choice`` (``any`` → ``required``, ``disable_parallel_tool_use`` →
  ``parallel_tool_calls: false``); ``thinking`` → ``reasoning_effort`` (by budget:
  :func:`effort_of`); ``metadata.user_id`` → ``user``.

What has no counterpart elsewhere (document blocks, server tools, file sources, ...) is noted
in :attr:`MessagesDecoded.untranslatable`: such a request may go only to Anthropic upstreams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from relaygate.errors import InvalidRequest
from relaygate.protocol.anthropic_messages.types import (
    Base64Source,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    TextBlock,
    Thinking,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import convert_request, decode_object

_encoder = msgspec.json.Encoder()

ImagePlace = tuple[int, int, int | None]
"""Where an image of the internal request sits in the client's body: message index, block
index, and its index inside that ``tool_result`` block's content (``None``: not in one)."""


@dataclass(slots=True)
class MessagesDecoded:
    """A Messages request: checked, translated, and as the client sent it."""

    request: MessagesRequest
    body: dict[str, Any]
    """The client's body (for an Anthropic upstream)."""
    chat: dict[str, Any]
    """The internal request as a chat-completions body."""
    internal: ChatRequest
    untranslatable: str | None = None
    """Where the first part without a counterpart outside Anthropic is (a ``param``)."""
    cache_writes: bool = False
    """Some block asks the upstream to write its prompt cache (``cache_control``)."""
    images: dict[tuple[int, int], ImagePlace] = field(default_factory=dict)
    """Each image part of the internal request (message, part) → its place in ``body``."""


def effort_of(thinking: Thinking | None) -> str | None:
    """The ``reasoning_effort`` for a thinking setting: a budget of 24,576 tokens or more is
    ``high``, 8,192 or more ``medium``, less ``low``; ``adaptive`` is ``medium``."""
    if thinking is None or thinking.type == "disabled":
        return None
    if thinking.type == "adaptive":
        return "medium"
    budget = thinking.budget_tokens or 0
    return "high" if budget >= 24576 else "medium" if budget >= 8192 else "low"


def _check(value: Any, cls: type[Any], param: str) -> Any:
    try:
        return msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid value for {param}: {exc}", param=param) from None


class _Translator:
    """One request's translation (keeps what was seen on the way)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.untranslatable: str | None = None
        self.cache_writes = False
        self._places: dict[int, ImagePlace] = {}

    def cannot(self, param: str) -> None:
        if self.untranslatable is None:
            self.untranslatable = param

    def _seen(self, block: dict[str, Any]) -> None:
        if block.get("cache_control") is not None:
            self.cache_writes = True

    def system(self, content: str | list[dict[str, Any]], where: str) -> None:
        if isinstance(content, str):
            if content:
                self.messages.append({"role": "system", "content": content})
            return
        parts = []
        for b, block in enumerate(content):
            self._seen(block)
            param = f"{where}[{b}]"
            if block.get("type") != "text":
                raise InvalidRequest("System content blocks must be text blocks", param=param)
            parts.append({"type": "text", "text": _check(block, TextBlock, param).text})
        if parts:
            self.messages.append({"role": "system", "content": parts})

    def _image(self, block: dict[str, Any], param: str, place: ImagePlace) -> dict[str, Any]:
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            self.cannot(f"{param}.source")
            return {}
        image = _check(block, ImageBlock, param).source
        if isinstance(image, Base64Source):
            url = f"data:{image.media_type};base64,{image.data}"
        else:
            url = image.url
        part = {"type": "image_url", "image_url": {"url": url}}
        self._places[id(part)] = place
        return part

    def _parts(
        self, blocks: list[dict[str, Any]], param: str, m: int, b: int
    ) -> list[dict[str, Any]]:
        """A tool result's text and image blocks as content parts."""
        parts: list[dict[str, Any]] = []
        for i, block in enumerate(blocks):
            self._seen(block)
            kind = block.get("type")
            where = f"{param}[{i}]"
            if kind == "text":
                parts.append({"type": "text", "text": _check(block, TextBlock, where).text})
            elif kind == "image":
                part = self._image(block, where, (m, b, i))
                if part:
                    parts.append(part)
            else:
                self.cannot(where)
        return parts

    def user(self, m: int, content: str | list[dict[str, Any]]) -> None:
        where = f"messages[{m}].content"
        if isinstance(content, str):
            self.messages.append({"role": "user", "content": content})
            return
        after: list[dict[str, Any]] = []
        rest: list[dict[str, Any]] = []
        for b, block in enumerate(content):
            if block.get("type") != "tool_result":
                continue
            self._seen(block)
            result = _check(block, ToolResultBlock, f"{where}[{b}]")
            text, images = self._result(result, f"{where}[{b}].content", m, b)
            self.messages.append(
                {"role": "tool", "tool_call_id": result.tool_use_id, "content": text}
            )
            after += images
        for b, block in enumerate(content):
            if block.get("type") == "tool_result":
                continue
            self._seen(block)
            kind = block.get("type")
            param = f"{where}[{b}]"
            if kind == "text":
                rest.append({"type": "text", "text": _check(block, TextBlock, param).text})
            elif kind == "image":
                part = self._image(block, param, (m, b, None))
                if part:
                    rest.append(part)
            else:
                self.cannot(param)
        if after or rest:
            self.messages.append({"role": "user", "content": after + rest})

    def _result(
        self, result: ToolResultBlock, where: str, m: int, b: int
    ) -> tuple[str, list[dict[str, Any]]]:
        """A tool result's text, and its images (for the user message that follows)."""
        content = result.content
        prefix = "[error] " if result.is_error else ""
        if content is None or isinstance(content, str):
            return prefix + (content or ""), []
        parts = self._parts(content, where, m, b)
        texts = [part["text"] for part in parts if part["type"] == "text"]
        images = [part for part in parts if part["type"] == "image_url"]
        return prefix + "\n".join(texts), images

    def image_places(self) -> dict[tuple[int, int], ImagePlace]:
        """Each image part of the translated messages → its place in the client's body."""
        found: dict[tuple[int, int], ImagePlace] = {}
        for mi, message in enumerate(self.messages):
            content = message.get("content")
            if isinstance(content, list):
                for pi, part in enumerate(content):
                    place = self._places.get(id(part))
                    if place is not None:
                        found[(mi, pi)] = place
        return found

    def assistant(self, m: int, content: str | list[dict[str, Any]]) -> None:
        if isinstance(content, str):
            if content:
                self.messages.append({"role": "assistant", "content": content})
            return
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for b, block in enumerate(content):
            self._seen(block)
            kind = block.get("type")
            where = f"messages[{m}].content[{b}]"
            if kind == "text":
                texts.append(_check(block, TextBlock, where).text)
            elif kind == "tool_use":
                use = _check(block, ToolUseBlock, where)
                arguments = _encoder.encode(use.input).decode()
                calls.append(
                    {"id": use.id, "type": "function",
                     "function": {"name": use.name, "arguments": arguments}}
                )  # fmt: skip
            elif kind not in ("thinking", "redacted_thinking"):
                self.cannot(where)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        if texts or calls:
            self.messages.append(message)


def _tools(tools: list[dict[str, Any]], t: _Translator) -> list[dict[str, Any]]:
    translated = []
    for i, tool in enumerate(tools):
        t._seen(tool)
        if tool.get("type") not in (None, "custom"):
            t.cannot(f"tools[{i}]")  # a server tool (web search, code execution, ...)
            continue
        checked = _check(tool, Tool, f"tools[{i}]")
        function: dict[str, Any] = {"name": checked.name, "parameters": checked.input_schema}
        if checked.description:
            function["description"] = checked.description
        translated.append({"type": "function", "function": function})
    return translated


def _tool_choice(choice: ToolChoice, chat: dict[str, Any]) -> None:
    if choice.type == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
    else:
        chat["tool_choice"] = {"any": "required"}.get(choice.type, choice.type)
    if choice.disable_parallel_tool_use:
        chat["parallel_tool_calls"] = False


def _chat_body(request: MessagesRequest, body: dict[str, Any], t: _Translator) -> dict[str, Any]:
    if body.get("cache_control") is not None:
        t.cache_writes = True  # automatic caching of the whole prompt
    if request.system is not None:
        t.system(request.system, "system")
    for m, message in enumerate(request.messages):
        if message.role == "system":
            t.system(message.content, f"messages[{m}].content")
        elif message.role == "user":
            t.user(m, message.content)
        else:
            t.assistant(m, message.content)
    chat: dict[str, Any] = {"model": request.model, "messages": t.messages}
    if not t.messages:
        raise InvalidRequest("messages: at least one message needs content", param="messages")
    if request.max_tokens is not None:
        chat["max_completion_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        if getattr(request, name) is not None:
            chat[name] = getattr(request, name)
    if request.stop_sequences:
        chat["stop"] = request.stop_sequences
    if request.tools:
        chat["tools"] = _tools(request.tools, t)
    if request.tool_choice is not None and request.tools:
        _tool_choice(_check(request.tool_choice, ToolChoice, "tool_choice"), chat)
    thinking = _check(request.thinking, Thinking, "thinking") if request.thinking else None
    effort = effort_of(thinking)
    if effort is not None:
        chat["reasoning_effort"] = effort
    user = (request.metadata or {}).get("user_id")
    if isinstance(user, str) and user:
        chat["user"] = user
    if request.stream:
        chat["stream"] = True
    return chat


def decode_messages(body: bytes, *, count: bool = False) -> MessagesDecoded:
    """Decode and check a Messages request (``count``: for ``count_tokens``, which takes no
    ``max_tokens``); 400 in terms of the client's own fields."""
    raw = decode_object(body)
    request = convert_request(raw, MessagesRequest)
    if not count and request.max_tokens is None:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    t = _Translator()
    chat = _chat_body(request, raw, t)
    try:
        internal = msgspec.convert(chat, ChatRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"The request cannot be served: {exc}") from None
    return MessagesDecoded(
        request, raw, chat, internal, t.untranslatable, t.cache_writes, t.image_places()
    )


__all__ = ["MessageParam", "MessagesDecoded", "decode_messages", "effort_of"]
