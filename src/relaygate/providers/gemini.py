"""Google's Gemini API: ``models/{model}:generateContent`` and
``models/{model}:streamGenerateContent?alt=sse``, authenticated with ``x-goog-api-key``.

Requests are translated from OpenAI's chat format: ``system``/``developer`` messages become
``systemInstruction``; ``assistant`` becomes the ``model`` role; images become ``inlineData``
(``data:`` URLs) or ``fileData`` (http(s) URLs); assistant ``tool_calls`` become
``functionCall`` parts and ``tool`` messages ``functionResponse`` parts; ``temperature``,
``top_p``, ``top_k``, ``max_completion_tokens``/``max_tokens``, ``stop``, ``n``, ``seed``, the
penalties and ``response_format`` go to ``generationConfig``; ``reasoning_effort`` becomes a
``thinkingConfig`` that also asks for the thoughts (``thinkingBudget``, or ``thinkingLevel`` with
the ``thinking_level`` option for Gemini 3 models).

Answers map back: parts with ``thought: true`` to ``reasoning_content``; ``functionCall`` parts to
``tool_calls`` (their ``thoughtSignature``, which Gemini wants back with the call, rides in the
tool call's id after :data:`SIGNATURE_MARK`); ``finishReason`` and a prompt blocked by
``promptFeedback.blockReason`` to ``finish_reason``; ``usageMetadata`` to OpenAI's usage
(thoughts are reasoning tokens and part of the completion; cached content is part of the prompt).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any, NoReturn
from urllib.parse import quote

import msgspec

from relaygate.errors import InvalidRequest, UpstreamError, UpstreamProtocolError
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
from relaygate.protocol.validate import decode_json
from relaygate.providers.base import (
    DONE,
    STARTED,
    Batch,
    Event,
    Finish,
    ProviderRequest,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)
from relaygate.providers.http import (
    HttpJsonProvider,
    decode_upstream,
    parse_data_url,
    tool_arguments,
    upstream_message,
)
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
}
"""``thinkingBudget`` (tokens) for each ``reasoning_effort``."""
FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
"""Finish reasons that mean the answer was withheld: ``content_filter``."""
SIGNATURE_MARK = "~sig~"
_IMAGE_TYPES = {".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}
_encoder = msgspec.json.Encoder()


class GeminiOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    thinking_level: bool = False
    """Send ``thinkingLevel`` (Gemini 3) instead of ``thinkingBudget`` (Gemini 2.5)."""


# --- request ----------------------------------------------------------------------------------


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _image_part(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, param)
        return {"inlineData": {"mimeType": media_type, "data": base64.b64encode(data).decode()}}
    path = url.split("?", 1)[0].lower()
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    return {"fileData": {"mimeType": _IMAGE_TYPES.get(suffix, "image/jpeg"), "fileUri": url}}


def _user_parts(content: Content, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for p, part in enumerate(content):
        if isinstance(part, ImagePart):
            parts.append(_image_part(part.image_url.url, f"{where}.content[{p}]"))
        elif part.text:
            parts.append({"text": part.text})
    return parts


def _model_parts(message: AssistantMessage, where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = _text(message.content) if message.content is not None else ""
    if text:
        parts.append({"text": text})
    for t, call in enumerate(message.tool_calls or ()):
        function = call.get("function") or {}
        args = tool_arguments(function.get("arguments"), f"{where}.tool_calls[{t}].function")
        part: dict[str, Any] = {"functionCall": {"name": function.get("name") or "", "args": args}}
        _, mark, signature = str(call.get("id") or "").partition(SIGNATURE_MARK)
        if mark:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _response_part(message: ToolMessage, names: dict[str, str]) -> dict[str, Any]:
    text = _text(message.content)
    try:
        value = decode_json(text, "content")  # depth-bounded: Gemini gets it as JSON
    except (msgspec.DecodeError, InvalidRequest):
        value = text  # not JSON, or nested too deeply to pass on as JSON: as the text it is
    response = value if isinstance(value, dict) else {"result": value}
    name = names.get(message.tool_call_id, "")
    return {"functionResponse": {"name": name, "response": response}}


def translate_contents(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``systemInstruction`` parts and the ``contents`` of a Gemini request."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m, message in enumerate(request.messages):
        where = f"messages[{m}]"
        if isinstance(message, SystemMessage | DeveloperMessage):
            text = _text(message.content)
            if text:
                system.append({"text": text})
            continue
        if isinstance(message, AssistantMessage):
            for call in message.tool_calls or ():
                names[str(call.get("id"))] = (call.get("function") or {}).get("name") or ""
            role, parts = "model", _model_parts(message, where)
        elif isinstance(message, ToolMessage):
            role, parts = "user", [_response_part(message, names)]
        else:
            role, parts = "user", _user_parts(message.content, where)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def translate_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    declarations = []
    for t, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequest("Only function tools can be sent to Gemini", param=f"tools[{t}]")
        declaration: dict[str, Any] = {"name": function.get("name") or ""}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def translate_tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or ""
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [name]}
    else:
        config = {"mode": {"none": "NONE", "required": "ANY"}.get(choice, "AUTO")}
    return {"functionCallingConfig": config}


def generation_config(request: ChatRequest, options: GeminiOptions) -> dict[str, Any]:
    fields: dict[str, float | None] = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k,
        "maxOutputTokens": request.max_completion_tokens or request.max_tokens,
        "candidateCount": request.n,
        "seed": request.seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    config: dict[str, Any] = {key: value for key, value in fields.items() if value is not None}
    if request.stop:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    response_format = request.response_format or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    effort = request.reasoning_effort
    if effort is not None:
        thinking: dict[str, Any] = {"includeThoughts": effort != "none"}
        if options.thinking_level:
            thinking["thinkingLevel"] = "MINIMAL" if effort == "none" else effort.upper()
        else:
            thinking["thinkingBudget"] = THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])
        config["thinkingConfig"] = thinking
    return config


def build_body(call: ProviderRequest, options: GeminiOptions) -> dict[str, Any]:
    """The ``generateContent`` request body for ``call``."""
    request = call.request
    system, contents = translate_contents(request)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = generation_config(request, options)
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = translate_tools(request.tools)
        tool_config = translate_tool_choice(request.tool_choice)
        if tool_config is not None:
            body["toolConfig"] = tool_config
    return body


# --- answer -----------------------------------------------------------------------------------


class _Struct(msgspec.Struct, rename="camel"):
    pass


class _FunctionCall(_Struct):
    name: str | None = None
    args: Any = None
    id: str | None = None


class _Part(_Struct):
    text: str | None = None
    thought: bool | None = None
    function_call: _FunctionCall | None = None
    thought_signature: str | None = None


class _Content(_Struct):
    parts: list[_Part] = msgspec.field(default_factory=list)


class _Candidate(_Struct):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int | None = None


class _PromptFeedback(_Struct):
    block_reason: str | None = None


class _ModalityCount(_Struct):
    modality: str | None = None
    token_count: int | None = None


class _UsageMetadata(_Struct):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    cached_content_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    prompt_tokens_details: list[_ModalityCount] | None = None


class _Response(_Struct):
    candidates: list[_Candidate] | None = None
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    error: dict[str, Any] | None = None


_response_decoder = msgspec.json.Decoder(_Response)


def usage_from(usage: _UsageMetadata) -> TokenUsage:
    """``usageMetadata`` in OpenAI's meaning: thoughts are reasoning and part of the completion;
    cached content and tool-use prompts are part of the prompt."""
    thoughts = usage.thoughts_token_count or 0
    images = sum(
        d.token_count or 0 for d in usage.prompt_tokens_details or () if d.modality == "IMAGE"
    )
    return TokenUsage(
        prompt_tokens=(usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0),
        completion_tokens=(usage.candidates_token_count or 0) + thoughts,
        cached_tokens=usage.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
        image_tokens=images,
    )


def finish_reason(reason: str, called_tools: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if called_tools else "stop"


class _Answer:
    """Turns ``GenerateContentResponse`` objects (one, or a stream of them) into events."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tools: dict[int, int] = {}
        """Tool calls so far, by candidate."""
        self.finished = False
        self.usage: _UsageMetadata | None = None
        self.failed: UpstreamError | None = None

    def decode(self, data: bytes) -> _Response:
        return decode_upstream(_response_decoder, data, self.label, "a response")

    def feed(self, payloads: list[bytes]) -> list[Event]:
        """The events of one network read's payloads (streamed responses); an error among them
        is kept in ``failed`` (to be raised once the events before it are passed on)."""
        events: list[Event] = []
        try:
            for data in payloads:
                if data:
                    events.extend(self.events(self.decode(data)))
        except UpstreamError as exc:
            self.failed = exc
        return events

    def events(self, response: _Response) -> list[Event]:
        if response.error is not None:
            detail = upstream_message(_encoder.encode({"error": response.error}))
            raise UpstreamProtocolError(
                f"Upstream {self.label} failed mid-stream: {detail or 'error'}",
                upstream=self.label,
            )
        if response.usage_metadata is not None:
            self.usage = response.usage_metadata
        feedback = response.prompt_feedback
        if not response.candidates and feedback is not None and feedback.block_reason:
            self.finished = True
            return [Finish("content_filter")]
        events: list[Event] = []
        for candidate in response.candidates or ():
            index = candidate.index or 0
            for part in candidate.content.parts if candidate.content else ():
                events.extend(self._part(index, part))
            if candidate.finish_reason:
                self.finished = True
                called = self.tools.get(index, 0) > 0
                events.append(Finish(finish_reason(candidate.finish_reason, called), index))
        return events

    def _part(self, index: int, part: _Part) -> list[Event]:
        call = part.function_call
        if call is not None:
            tool = self.tools[index] = self.tools.get(index, 0) + 1
            call_id = call.id or f"call_{secrets.token_hex(12)}"
            if part.thought_signature:
                call_id += SIGNATURE_MARK + part.thought_signature
            arguments = _encoder.encode(call.args if call.args is not None else {}).decode()
            return [ToolCallDelta(tool - 1, call_id, call.name, arguments, index)]
        if part.text:
            return [
                ReasoningDelta(part.text, index) if part.thought else TextDelta(part.text, index)
            ]
        return []

    def final_usage(self) -> list[Event]:
        return [usage_from(self.usage)] if self.usage is not None else []


# --- the provider -----------------------------------------------------------------------------


class GeminiProvider(HttpJsonProvider):
    """Gemini models over the Gemini API (Google AI Studio keys)."""

    name = "gemini"
    supports_top_k = True

    def __init__(self, settings: UpstreamSettings, session: UpstreamClient) -> None:
        super().__init__(settings, session)
        self.options = msgspec.convert(settings.options, GeminiOptions)

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        try:
            msgspec.convert(settings.options, GeminiOptions)
        except msgspec.ValidationError as exc:
            raise ValueError(f"options: {exc} (gemini takes: thinking_level)") from None

    def url(self, model: str, stream: bool) -> str:
        base = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        name = quote(model.removeprefix("models/"), safe="")
        if stream:
            return f"{base}/models/{name}:streamGenerateContent?alt=sse"
        return f"{base}/models/{name}:generateContent"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.settings.api_key:
            headers["x-goog-api-key"] = self.settings.api_key
        return headers

    def raise_status(self, status: int, raw: bytes, retry_after: str | None) -> NoReturn:
        # Gemini answers a bad key with 400 API_KEY_INVALID: our credentials, not the request.
        if status == 400 and b"API_KEY_INVALID" in raw:
            status = 401
        super().raise_status(status, raw, retry_after)

    async def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        body = _encoder.encode(build_body(request, self.options))
        response = await self.post(self.url(request.upstream_model, request.stream), body)
        answer = _Answer(self.label)
        complete = False
        try:
            yield STARTED
            if request.stream:
                reader = self.sse_reader(response)
                while (payloads := await self.read_more(reader)) is not None:
                    batch = answer.feed(payloads)
                    if batch:
                        yield batch
                    if answer.failed is not None:
                        raise answer.failed
                if not answer.finished:
                    raise self.cut()
                yield [*answer.final_usage(), DONE]
            else:
                events = answer.events(answer.decode(await self.read_body(response)))
                yield events + answer.final_usage()
            complete = True
        finally:
            if complete:
                response.release()
            else:
                response.close()
