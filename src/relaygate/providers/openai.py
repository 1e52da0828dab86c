"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, DeepSeek, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from relaygate.errors import (
    UpstreamError,
    UpstreamProtocolError,
)
from relaygate.providers.base import (
    DONE,
    STARTED,
    Batch,
    EncodedText,
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
    TransportError,
    decode_upstream,
    upstream_message,
)
from relaygate.providers.openai_responses import relay_events
from relaygate.providers.reading import LineSplitter
from relaygate.providers.text_template import TextTemplate, valid
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import Response


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_completion_decoder = msgspec.json.Decoder(_Completion)
_encoder = msgspec.json.Encoder()
# Fields relaygate consumes itself and never forwards.
_GATEWAY_FIELDS = ("models", "top_k", "stream_options")


def usage_from(raw: _Usage) -> TokenUsage:
    prompt = raw.prompt_tokens_details or _PromptDetails()
    completion = raw.completion_tokens_details or _CompletionDetails()
    return TokenUsage(
        prompt_tokens=raw.prompt_tokens or 0,
        completion_tokens=raw.completion_tokens or 0,
        cached_tokens=prompt.cached_tokens or 0,
        prompt_audio_tokens=prompt.audio_tokens or 0,
        image_tokens=prompt.image_tokens or 0,
        reasoning_tokens=completion.reasoning_tokens or 0,
        completion_audio_tokens=completion.audio_tokens or 0,
    )


def _tool_events(calls: list[_ToolCall], index: int) -> list[Event]:
    return [
        ToolCallDelta(
            tool_index=call.index,
            id=call.id,
            name=call.function.name if call.function else None,
            arguments=(call.function.arguments or "") if call.function else "",
            index=index,
        )
        for call in calls
    ]


def chunk_events(chunk: _Chunk) -> list[Event]:
    """The events of one streamed chunk."""
    events: list[Event] = []
    for choice in chunk.choices or ():
        delta = choice.delta
        if delta is not None:
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning:
                events.append(ReasoningDelta(reasoning, choice.index))
            if delta.content:
                events.append(TextDelta(delta.content, choice.index))
            if delta.tool_calls:
                events.extend(_tool_events(delta.tool_calls, choice.index))
        if choice.finish_reason:
            events.append(Finish(choice.finish_reason, choice.index))
    if chunk.usage is not None:
        events.append(usage_from(chunk.usage))
    return events


def plain_text(chunk: _Chunk) -> str | None:
    """The text of a chunk that is only a text delta of choice 0 (the common chunk)."""
    if chunk.usage is not None or not chunk.choices or len(chunk.choices) != 1:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    if (
        choice.index
        or choice.finish_reason
        or delta is None
        or not delta.content
        or delta.role is not None
        or delta.reasoning_content
        or delta.reasoning
        or delta.tool_calls
    ):
        return None
    return delta.content


def completion_events(completion: _Completion) -> list[Event]:
    """The events of one non-streamed answer."""
    events: list[Event] = []
    for choice in completion.choices or ():
        message = choice.message or _Message()
        reasoning = message.reasoning_content or message.reasoning
        if reasoning:
            events.append(ReasoningDelta(reasoning, choice.index))
        if message.content is not None:
            events.append(TextDelta(message.content, choice.index))
        if message.tool_calls:
            events.extend(_tool_events(message.tool_calls, choice.index))
        events.append(Finish(choice.finish_reason or "stop", choice.index))
    if completion.usage is not None:
        events.append(usage_from(completion.usage))
    return events


class _StreamState:
    """What one streamed answer has told so far."""

    __slots__ = ("failed", "finished", "saw_finish", "template")

    def __init__(self) -> None:
        self.template = TextTemplate()
        self.finished = False
        """``[DONE]`` was received."""
        self.saw_finish = False
        """A choice's ``finish_reason`` was received."""
        self.failed: UpstreamError | None = None


class OpenAIProvider(HttpJsonProvider):
    """Chat completions over OpenAI's HTTP API."""

    fetches_image_urls = True

    name = "openai"
    supports_top_k = False

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        unknown = set(settings.options) - {"supports_top_k", "responses"}
        if unknown:
            raise ValueError(
                f"options: unknown option(s) {', '.join(sorted(unknown))}"
                " (openai takes: supports_top_k, responses)"
            )
        for name in ("supports_top_k", "responses"):
            if not isinstance(settings.options.get(name, False), bool):
                raise ValueError(f"options.{name}: must be true or false")

    @property
    def speaks_responses(self) -> bool:
        """Whether ``POST /v1/responses`` requests pass through to this upstream's own
        Responses API (option ``responses``; by default only for OpenAI itself, at the default
        ``base_url`` or ``api.openai.com``): OpenAI-compatible servers mostly lack it."""
        option = self.settings.options.get("responses")
        if option is not None:
            return bool(option)
        base = self.settings.base_url
        return base is None or base.rstrip("/") == "https://api.openai.com/v1"

    def responses_url(self) -> str:
        base = (self.settings.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/responses"

    _url: str | None = None

    def url(self) -> str:
        base = (self.settings.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        body = {k: v for k, v in request.raw.items() if k not in _GATEWAY_FIELDS}
        body["model"] = request.upstream_model
        if request.request.top_k is not None and self.settings.options.get("supports_top_k"):
            body["top_k"] = request.request.top_k
        if request.stream:
            options = dict(request.raw.get("stream_options") or {})
            options["include_usage"] = True
            body["stream"] = True
            body["stream_options"] = options
        else:
            body["stream"] = False
        return body

    async def _open(self, request: ProviderRequest) -> Response:
        url = self._url
        if url is None:
            url = self._url = self.url()
        return await self.post(url, _encoder.encode(self.body(request)))

    async def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        native = request.native
        if native is not None and native.dialect == "responses" and self.speaks_responses:
            async for batch in relay_events(self, request):
                yield batch
            return
        response = await self._open(request)
        complete = False
        try:
            yield STARTED
            if request.stream:
                # The stream loop is written out here rather than delegated: every level of
                # async generator costs each network read another resume.
                stream = _StreamState()
                splitter = LineSplitter(self.settings.max_line_bytes, self.label)
                receive = response.receive
                try:
                    while piece := await receive():
                        batch = self._read_lines(splitter.feed(piece), stream)
                        if batch:
                            yield batch
                        if stream.failed is not None:
                            raise stream.failed
                        if stream.finished:
                            break
                    else:
                        if rest := splitter.rest():  # a last line without its newline
                            batch = self._read_lines([rest], stream)
                            if batch:
                                yield batch
                            if stream.failed is not None:
                                raise stream.failed
                except TransportError as exc:
                    raise self.broke_off(exc, "mid-stream") from None
                if not stream.finished and not stream.saw_finish:
                    raise self.cut()
            else:
                yield await self._completion_events(response)
            complete = True
        finally:
            # A finished answer returns the connection to the pool; an abandoned one is closed
            # so that the upstream stops generating.
            if complete:
                response.release()
            else:
                response.close()

    def _read_lines(self, lines: list[bytes], stream: _StreamState) -> list[Event]:
        """The events of one network read's complete lines. Text chunks that repeat the
        stream's template are passed through as :class:`EncodedText`; an error chunk ends the
        batch and is kept in ``stream.failed`` (raised once the events before it are passed
        on).

        A run of template lines is cut into literals as it is read and checked once, when it
        ends (:func:`relaygate.providers.text_template.valid`); a run that fails the check is
        read again line by line (:meth:`_read_slowly`), which finds the line at fault."""
        batch: list[Event] = []
        template = stream.template
        head, foot = template.head, template.foot
        start, foot_length = template.start, template.foot_length
        run: list[bytes] = []
        lines_of_run: list[bytes] = []
        for line in filter(None, lines):  # (empty lines, half of an SSE stream, skipped in C)
            if line.startswith(head) and line.endswith(foot):
                run.append(line[start : len(line) - foot_length])
                lines_of_run.append(line)
                continue
            if line == b"\r":
                continue
            if run:
                if not self._run_read(batch, run, lines_of_run, stream):
                    return batch
                run, lines_of_run = [], []
                head, foot = template.head, template.foot
                start, foot_length = template.start, template.foot_length
            if not self._line_read(batch, line, stream):
                return batch
            head, foot = template.head, template.foot  # perhaps learned just now
            start, foot_length = template.start, template.foot_length
        if run:
            self._run_read(batch, run, lines_of_run, stream)
        return batch

    def _run_read(
        self, batch: list[Event], run: list[bytes], lines: list[bytes], stream: _StreamState
    ) -> bool:
        """Add a run of template lines (``run``: their literals) to ``batch``; whether the
        batch goes on (no error chunk, no ``[DONE]`` among them)."""
        if valid(run):
            batch.append(EncodedText(run))
            return True
        batch += self._read_slowly(lines, stream)
        return stream.failed is None and not stream.finished

    def _line_read(self, batch: list[Event], line: bytes, stream: _StreamState) -> bool:
        """Add the events of a line that is not a template line (a ``data:`` line, the
        ``[DONE]`` that ends the stream; any other line is skipped); whether the batch goes
        on."""
        if not line.startswith(b"data:"):
            return True
        data = line[5:].strip()
        if data == b"[DONE]":
            stream.finished = True
            batch.append(DONE)
            return False
        return not data or self._data_read(batch, data, line, stream)

    def _data_read(
        self, batch: list[Event], data: bytes, line: bytes, stream: _StreamState
    ) -> bool:
        """Add the events of one decoded ``data:`` line; whether the batch goes on."""
        try:
            events = self._chunk_events(data, line, stream.template)
        except UpstreamError as exc:
            stream.failed = exc
            return False
        if not stream.saw_finish:
            stream.saw_finish = any(type(e) is Finish for e in events)
        batch += events
        return True

    def _read_slowly(self, lines: list[bytes], stream: _StreamState) -> list[Event]:
        """:meth:`_read_lines`, checking each template line on its own."""
        batch: list[Event] = []
        run: list[bytes] | None = None
        template = stream.template
        for line in lines:
            if not line or line == b"\r":
                continue
            literal = template.literal(line)
            if literal is not None:
                if run is None:
                    run = []
                    batch.append(EncodedText(run))
                run.append(literal)
                continue
            run = None
            if not self._line_read(batch, line, stream):
                break
        return batch

    async def _completion_events(self, response: Response) -> list[Event]:
        body = await self.read_body(response)
        return completion_events(decode_upstream(_completion_decoder, body, self.label, "a body"))

    def _chunk_events(self, data: bytes, line: bytes, template: TextTemplate) -> list[Event]:
        chunk = decode_upstream(_chunk_decoder, data, self.label, "a stream chunk")
        if chunk.error is not None:
            detail = upstream_message(_encoder.encode({"error": chunk.error}))
            raise UpstreamProtocolError(
                f"Upstream {self.label} failed mid-stream: {detail or 'error'}",
                upstream=self.label,
            )
        text = plain_text(chunk)
        if text is not None:
            template.learn(line, text)
            return [TextDelta(text)]
        return chunk_events(chunk)


__all__ = ["OpenAIProvider", "UpstreamError"]
