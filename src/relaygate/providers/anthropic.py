"""Anthropic's Messages API: ``POST {base_url}/v1/messages`` (``x-api-key``, ``anthropic-version``).

Requests are translated from OpenAI's chat format:

- ``system`` and ``developer`` messages become the top-level ``system`` text blocks;
- user content becomes text and image blocks (``data:`` URLs as a base64 source, http(s) URLs
  as a url source); assistant ``tool_calls`` become ``tool_use`` blocks and ``tool`` messages
  ``tool_result`` blocks in a user turn; consecutive turns of one role are merged;
- ``max_completion_tokens`` / ``max_tokens`` (else the ``max_tokens`` option) become the
  required ``max_tokens``; ``stop`` becomes ``stop_sequences``; ``tools``, ``tool_choice``,
  ``parallel_tool_calls``, ``response_format`` (JSON schema) and ``user`` are carried over;
- ``temperature`` (capped at Anthropic's 1.0), ``top_p`` and ``top_k`` are sent with API
  version 2023-06-01 and left out from 2026-10-21 on, which rejects them (the ``sampling``
  option overrides this, e.g. ``false`` for models that reject them on any version);
- ``reasoning_effort`` enables extended thinking with a budget from :data:`THINKING_BUDGETS`
  (below ``max_tokens``; none when ``max_tokens`` leaves no room for Anthropic's minimum).

Answers map back: thinking to ``reasoning_content``, ``tool_use`` to ``tool_calls``, stop
reasons to ``finish_reason``, and usage to OpenAI's meaning: ``prompt_tokens`` counts input,
cache reads and cache writes; ``cached_tokens`` is the cache reads (writes cost more than input
at Anthropic: they are ``cache_write_tokens`` and ``cache_write_1h_tokens``, by their TTL, each
billed at its own price); ``reasoning_tokens`` comes from
``output_tokens_details`` (or, for API versions without it, an estimate from the thinking text).
An ``error`` event in the stream ends it with an error; one that arrives before any content is
treated like an error status (so it may be retried elsewhere).

Options: ``version`` (the ``anthropic-version`` header, default ``2023-06-01``; when set it is
sent on a passed-through body too, over the client's), ``max_tokens`` (when the request sets no
limit, default 4096), ``sampling`` (see above) and ``betas`` (``anthropic-beta`` values sent
with every request; a passed-through body's allowed client values are added).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from relaygate.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnreachable,
    excerpt,
)
from relaygate.protocol.types import (
    AssistantMessage,
    ChatRequest,
    Content,
    DeveloperMessage,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
)
from relaygate.providers.anthropic_native import count_tokens, relay_events
from relaygate.providers.anthropic_usage import ERROR_STATUS, merge_usage, usage_from
from relaygate.providers.anthropic_usage import Usage as _Usage
from relaygate.providers.base import (
    DONE,
    STARTED,
    Batch,
    Event,
    Finish,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from relaygate.providers.http import (
    HttpJsonProvider,
    SseReader,
    TransportError,
    decode_upstream,
    parse_data_url,
    tool_arguments,
    upstream_message,
    upstream_word,
)
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
NO_SAMPLING_SINCE = "2026-10-21"
"""The first API version that rejects ``temperature``, ``top_p`` and ``top_k``."""
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
"""Thinking budget (tokens) for each ``reasoning_effort``; ``none`` turns thinking off."""
MIN_THINKING_BUDGET = 1024
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_encoder = msgspec.json.Encoder()


class AnthropicOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: str | None = None
    """The ``anthropic-version`` header (``None``: :data:`DEFAULT_VERSION`, or for a body
    passed through, the client's)."""
    max_tokens: Annotated[int, msgspec.Meta(gt=0)] = 4096
    sampling: bool | None = None
    betas: list[str] = msgspec.field(default_factory=list)
    """``anthropic-beta`` values sent with every request (a client's allowed ones added)."""

    @property
    def api_version(self) -> str:
        return self.version or DEFAULT_VERSION

    @property
    def sends_sampling(self) -> bool:
        if self.sampling is not None:
            return self.sampling
        return self.api_version < NO_SAMPLING_SINCE


# --- request ----------------------------------------------------------------------------------


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, param)
        if media_type not in IMAGE_TYPES:
            raise InvalidRequest(f"Unsupported image type {excerpt(media_type)}", param=param)
        source = {
            "type": "base64",
            "media_type": media_type,
            "data": base64.b64encode(data).decode(),
        }
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_content(content: Content, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for p, part in enumerate(content):
        if isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url, f"{where}.content[{p}]"))
        elif part.text:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def _assistant_content(message: AssistantMessage, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text(message.content) if message.content is not None else ""
    if text:
        blocks.append({"type": "text", "text": text})
    for t, call in enumerate(message.tool_calls or ()):
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{t}",
                "name": function.get("name") or "",
                "input": tool_arguments(
                    function.get("arguments"), f"{where}.tool_calls[{t}].function.arguments"
                ),
            }
        )
    return blocks


def translate_messages(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``system`` blocks and the ``messages`` of an Anthropic request."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m, message in enumerate(request.messages):
        where = f"messages[{m}]"
        if isinstance(message, SystemMessage | DeveloperMessage):
            text = _text(message.content)
            if text:
                system.append({"type": "text", "text": text})
            continue
        if isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_content(message, where)
        elif isinstance(message, ToolMessage):
            result = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": _text(message.content),
            }
            role, blocks = "user", [result]
        else:
            role, blocks = "user", _user_content(message.content, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def translate_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translated = []
    for t, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                "Only function tools can be sent to Anthropic", param=f"tools[{t}]"
            )
        entry: dict[str, Any] = {
            "name": function.get("name") or "",
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            entry["strict"] = function["strict"]
        translated.append(entry)
    return translated


def translate_tool_choice(choice: str | dict[str, Any] | None, parallel: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or ""
        result: dict[str, Any] = {"type": "tool", "name": name}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        result = {"type": "auto"}
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def thinking_budget(request: ChatRequest, max_tokens: int) -> int | None:
    """The thinking budget for the request's ``reasoning_effort``, or ``None`` for no thinking.

    No thinking either when the last assistant turn called tools: Anthropic then wants that
    turn's signed thinking block back, which an OpenAI-format client does not keep.
    """
    effort = request.reasoning_effort
    if effort is None or effort == "none":
        return None
    last = next((m for m in reversed(request.messages) if isinstance(m, AssistantMessage)), None)
    if last is not None and last.tool_calls:
        return None
    budget = min(THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"]), max_tokens - 1)
    return budget if budget >= MIN_THINKING_BUDGET else None


def build_body(call: ProviderRequest, options: AnthropicOptions) -> dict[str, Any]:
    """The Messages API request body for ``call``."""
    request = call.request
    if request.n is not None and request.n > 1:
        raise InvalidRequest("n > 1 is not supported by Anthropic models", param="n")
    system, messages = translate_messages(request)
    max_tokens = request.max_completion_tokens or request.max_tokens or options.max_tokens
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "max_tokens": max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if options.sends_sampling:
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        for field in ("top_p", "top_k"):
            if getattr(request, field) is not None:
                body[field] = getattr(request, field)
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.tools:
        body["tools"] = translate_tools(request.tools)
        choice = translate_tool_choice(request.tool_choice, call.raw.get("parallel_tool_calls"))
        body["tool_choice"] = choice
    schema = (request.response_format or {}).get("json_schema") or {}
    if isinstance(schema.get("schema"), dict):
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema["schema"]}}
    if request.user:
        body["metadata"] = {"user_id": request.user}
    budget = thinking_budget(request, max_tokens)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if call.stream:
        body["stream"] = True
    return body


# --- answer -----------------------------------------------------------------------------------


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Message(msgspec.Struct):
    content: list[_Block] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class _StreamEvent(msgspec.Struct):
    type: str = ""
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


_message_decoder = msgspec.json.Decoder(_Message)
_event_decoder = msgspec.json.Decoder(_StreamEvent)


def _decode_event(data: bytes, label: str) -> _StreamEvent:
    return decode_upstream(_event_decoder, data, label, "a stream event")


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def message_events(message: _Message) -> list[Event]:
    """The events of one non-streamed answer."""
    events: list[Event] = []
    tools = 0
    thinking_chars = 0
    for block in message.content:
        if block.type == "thinking" and block.thinking:
            thinking_chars += len(block.thinking)
            events.append(ReasoningDelta(block.thinking))
        elif block.type == "text" and block.text:
            events.append(TextDelta(block.text))
        elif block.type == "tool_use":
            arguments = _encoder.encode(block.input if block.input is not None else {}).decode()
            events.append(ToolCallDelta(tools, block.id, block.name, arguments))
            tools += 1
    events.append(Finish(finish_reason(message.stop_reason)))
    events.append(usage_from(message.usage or _Usage(), thinking_chars))
    return events


class _StreamState:
    """What one streamed answer has told so far."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.usage = _Usage()
        self.tools: dict[int, int] = {}
        self.thinking_chars = 0
        self.stopped = False
        self.failed: UpstreamError | None = None

    def feed(self, payloads: list[bytes]) -> list[Event]:
        """The events of one network read's payloads; an error among them is kept in
        ``failed`` (to be raised once the events before it are passed on)."""
        events: list[Event] = []
        try:
            for data in payloads:
                if data:
                    events.extend(self.events(_decode_event(data, self.label)))
        except UpstreamError as exc:
            self.failed = exc
        return events

    def events(self, event: _StreamEvent) -> list[Event]:
        kind = event.type
        if kind == "message_start" and event.message is not None:
            merge_usage(self.usage, event.message.usage or _Usage())
        elif kind == "content_block_start" and event.content_block is not None:
            return self._block_start(event.index, event.content_block)
        elif kind == "content_block_delta" and event.delta is not None:
            return self._block_delta(event.index, event.delta)
        elif kind == "message_delta":
            merge_usage(self.usage, event.usage or _Usage())
            stop = event.delta.stop_reason if event.delta else None
            return [Finish(finish_reason(stop)), usage_from(self.usage, self.thinking_chars)]
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.error or _ErrorDetail()
            detail = upstream_message(_encoder.encode({"error": {"message": error.message}}))
            raise UpstreamProtocolError(
                f"Upstream {self.label} failed mid-stream: {upstream_word(error.type)}"
                + (f": {detail}" if detail else ""),
                upstream=self.label,
            )
        return []

    def _block_start(self, index: int, block: _Block) -> list[Event]:
        if block.type == "tool_use":
            tool = self.tools[index] = len(self.tools)
            return [ToolCallDelta(tool, block.id, block.name, "")]
        if block.type == "text" and block.text:
            return [TextDelta(block.text)]
        if block.type == "thinking" and block.thinking:
            self.thinking_chars += len(block.thinking)
            return [ReasoningDelta(block.thinking)]
        return []

    def _block_delta(self, index: int, delta: _Delta) -> list[Event]:
        if delta.type == "text_delta" and delta.text:
            return [TextDelta(delta.text)]
        if delta.type == "thinking_delta" and delta.thinking:
            self.thinking_chars += len(delta.thinking)
            return [ReasoningDelta(delta.thinking)]
        if delta.type == "input_json_delta" and delta.partial_json and index in self.tools:
            return [ToolCallDelta(self.tools[index], arguments=delta.partial_json)]
        return []


# --- the provider -----------------------------------------------------------------------------


class AnthropicProvider(HttpJsonProvider):
    """Claude models over Anthropic's Messages API."""

    fetches_image_urls = True

    name = "anthropic"
    supports_top_k = True

    def __init__(self, settings: UpstreamSettings, session: UpstreamClient) -> None:
        super().__init__(settings, session)
        self.options = msgspec.convert(settings.options, AnthropicOptions)

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        try:
            msgspec.convert(settings.options, AnthropicOptions)
        except msgspec.ValidationError as exc:
            raise ValueError(
                f"options: {exc} (anthropic takes: version, max_tokens, sampling, betas)"
            ) from None

    def url(self) -> str:
        return f"{(self.settings.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": self.options.api_version,
        }
        if self.options.betas:
            headers["anthropic-beta"] = ",".join(self.options.betas)
        if self.settings.api_key:
            headers["x-api-key"] = self.settings.api_key
        return headers

    def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        native = request.native
        if native is not None and native.dialect == "messages":
            return relay_events(self, request)
        return self._translated(request)

    async def count_tokens(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """``POST /v1/messages/count_tokens`` on this upstream (``body`` already has its
        model)."""
        return await count_tokens(self, body, headers)

    async def _translated(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        body = _encoder.encode(build_body(request, self.options))
        response = await self.post(self.url(), body)
        complete = False
        try:
            if request.stream:
                reader = self.sse_reader(response)
                payloads: list[bytes] | None = await self._first_payloads(reader)
                yield STARTED
                state = _StreamState(self.label)
                while payloads is not None:
                    batch = state.feed(payloads)
                    if state.stopped and state.failed is None:
                        batch.append(DONE)
                    if batch:
                        yield batch
                    if state.failed is not None:
                        raise state.failed
                    if state.stopped:
                        break
                    payloads = await self.read_more(reader)
                else:
                    raise self.cut()
            else:
                yield STARTED
                yield message_events(self._message(await self.read_body(response)))
            complete = True
        finally:
            if complete:
                response.release()
            else:
                response.close()

    def _message(self, raw: bytes) -> _Message:
        return decode_upstream(_message_decoder, raw, self.label, "a body")

    async def _first_payloads(self, reader: SseReader) -> list[bytes]:
        """The stream's first payloads; an error event before any content is an error status
        (nothing has reached the client yet, so it may be retried)."""
        try:
            first = await reader.next()
        except TransportError as exc:
            raise self.broke_off(exc, "before its stream started", retryable=True) from None
        if first is None:
            raise UpstreamUnreachable(
                f"Upstream {self.label} closed the stream before it started", upstream=self.label
            )
        for data in first:
            event = _decode_event(data, self.label) if data else _StreamEvent()
            if event.type == "error":
                status = ERROR_STATUS.get(event.error.type if event.error else "", 500)
                self.raise_status(status, _encoder.encode({"error": event.error}), None)
            if event.type.startswith("content_block"):
                break  # content came first: a later error is a mid-stream one
        return first
