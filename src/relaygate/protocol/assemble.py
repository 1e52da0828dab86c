"""Turning provider events into the contract's responses and stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import msgspec

from relaygate.errors import ApiError
from relaygate.protocol.render import SSE_DONE, SSE_KEEPALIVE, encoder, sse_error
from relaygate.protocol.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallFunction,
    Usage,
)
from relaygate.providers.base import (
    Done,
    EncodedText,
    Event,
    Finish,
    Passthrough,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)


def wire_usage(usage: TokenUsage) -> Usage:
    """The contract's usage object, with text tokens derived from the modality split."""
    text_in = max(0, usage.prompt_tokens - usage.image_tokens - usage.prompt_audio_tokens)
    text_out = max(
        0, usage.completion_tokens - usage.reasoning_tokens - usage.completion_audio_tokens
    )
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=usage.cached_tokens,
            text_tokens=text_in,
            audio_tokens=usage.prompt_audio_tokens,
            image_tokens=usage.image_tokens,
        ),
        completion_tokens_details=CompletionTokensDetails(
            text_tokens=text_out,
            audio_tokens=usage.completion_audio_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        ),
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        input_tokens_details=None,
    )


_literals = msgspec.json.Decoder(list[str])


def decode_literals(literals: list[bytes]) -> list[str]:
    """The texts of JSON string literals (of an :class:`EncodedText`)."""
    return _literals.decode(b"[" + b",".join(literals) + b"]")


@dataclass(slots=True)
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    encoded: list[bytes] | None = None
    """Text still JSON-encoded, appended after ``text`` (decoded when the answer is built)."""
    reasoning: list[str] = field(default_factory=list)
    tools: dict[int, ToolCall] = field(default_factory=dict)
    finish: str | None = None


@dataclass(slots=True)
class Collected:
    """Everything an answer produced so far: for the non-streaming body and for billing."""

    choices: dict[int, _ChoiceState] = field(default_factory=dict)
    usage: TokenUsage | None = None
    deltas: int = 0
    """Output tokens received, estimated: one a content, reasoning or tool-call delta (about
    one token each), and a relayed answer's by its bytes (:attr:`Passthrough.tokens`)."""
    body: bytes | None = None
    """The upstream's own non-streamed body, when it answered in the client's dialect."""
    image_tokens: int = 0
    """The request's images' prompt tokens by their real sizes (the ticket's), for an upstream
    that bills images by OpenAI's tile formula and does not report them."""

    def _choice(self, index: int) -> _ChoiceState:
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _ChoiceState()
        return state

    def add(self, event: Event) -> None:
        if type(event) is EncodedText:
            self._add_encoded(event.literals)
        elif type(event) is TextDelta:
            state = self._choice(event.index)
            if state.encoded:
                state.text += decode_literals(state.encoded)
                state.encoded = None
            state.text.append(event.text)
            self.deltas += 1
        elif type(event) is Done:
            pass  # every stream's last event: known at once (a failed ``isinstance`` costs more)
        elif type(event) is TokenUsage:
            self.usage = event  # every answer's: known at once too
        elif isinstance(event, Finish):
            self._choice(event.index).finish = event.reason
        elif isinstance(event, TokenUsage):
            self.usage = event
        elif isinstance(event, ReasoningDelta):
            self._choice(event.index).reasoning.append(event.text)
            self.deltas += 1
        elif isinstance(event, ToolCallDelta):
            self._add_tool(event)
            self.deltas += 1
        elif type(event) is Passthrough:
            if event.body:
                self.body = event.data
            self.deltas += event.tokens

    def _add_encoded(self, literals: list[bytes]) -> None:
        state = self._choice(0)
        if state.encoded is None:
            state.encoded = []
        state.encoded += literals
        self.deltas += len(literals)

    def _add_tool(self, event: ToolCallDelta) -> None:
        tools = self._choice(event.index).tools
        call = tools.get(event.tool_index)
        if call is None:
            tools[event.tool_index] = ToolCall(
                index=event.tool_index,
                id=event.id,
                type="function",
                function=ToolCallFunction(name=event.name, arguments=event.arguments),
            )
            return
        assert call.function is not None
        call.id = call.id or event.id
        call.function.name = call.function.name or event.name
        call.function.arguments += event.arguments

    def usage_or_estimate(self, prompt_guess: int) -> TokenUsage:
        """The upstream's usage, or for an answer cut short (or one that told none): the prompt
        estimate plus the tokens received; a ``partial`` usage is completed the same way.
        :attr:`image_tokens` fills in an ``image_tokens`` the upstream did not report, within
        the prompt's tokens."""
        usage = self.usage
        if usage is None:
            usage = TokenUsage(prompt_tokens=prompt_guess, completion_tokens=self.deltas)
        elif usage.partial:
            output = max(usage.completion_tokens, self.deltas)
            prompt = usage.prompt_tokens or prompt_guess
            usage = replace(usage, prompt_tokens=prompt, completion_tokens=output, partial=False)
        if self.image_tokens and not usage.image_tokens:
            usage = replace(usage, image_tokens=min(self.image_tokens, usage.prompt_tokens))
        return usage

    def completion(
        self, completion_id: str, model: str, created: int, usage: TokenUsage
    ) -> ChatCompletion:
        choices = []
        for index in sorted(self.choices) or [0]:
            state = self.choices.get(index) or _ChoiceState()
            tools = [state.tools[i] for i in sorted(state.tools)] if state.tools else None
            pieces = state.text
            if state.encoded:
                pieces = pieces + decode_literals(state.encoded)
            text = "".join(pieces)
            message = ResponseMessage(
                role="assistant",
                content=text if text or not tools else None,
                reasoning_content="".join(state.reasoning) or None,
                tool_calls=tools,
            )
            finish = state.finish or ("tool_calls" if tools else "stop")
            choices.append(Choice(index=index, message=message, finish_reason=finish))
        return ChatCompletion(
            id=completion_id,
            model=model,
            object="chat.completion",
            created=created,
            choices=choices,
            usage=wire_usage(usage),
        )


_TEXT_TAIL = b'},"finish_reason":null}],"usage":null}\n\n'


class ChunkWriter:
    """Encodes one stream's events as SSE chunks that share the stream's id and model.

    The common chunk, a text delta of choice 0, is the same bytes around the text every time:
    it is encoded once as a template and only the text is encoded per chunk.
    """

    __slots__ = (
        "_text_head",
        "_text_join",
        "_text_tail",
        "created",
        "id",
        "include_usage",
        "model",
        "started",
    )

    keepalive = SSE_KEEPALIVE
    """What a stream sends while its first event is awaited (an SSE comment)."""

    def __init__(
        self, completion_id: str, model: str, created: int, include_usage: bool = False
    ) -> None:
        self.id = completion_id
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.started: set[int] = set()
        # What _chunk([ChunkChoice(index=0, delta=Delta(content=text))]) writes around the
        # text, spelled out rather than encoded per stream (a test holds the two together).
        self._text_head = b"".join(
            (
                b'data: {"id":',
                encoder.encode(completion_id),
                b',"model":',
                encoder.encode(model),
                b',"object":"chat.completion.chunk","created":%d' % created,
                b',"choices":[{"index":0,"delta":{"content":',
            )
        )
        self._text_tail = _TEXT_TAIL
        self._text_join = _TEXT_TAIL + self._text_head

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id,
            model=self.model,
            object="chat.completion.chunk",
            created=self.created,
            choices=choices,
            usage=usage,
        )
        return b"data: " + encoder.encode(chunk) + b"\n\n"

    def _delta(self, index: int, delta: Delta) -> bytes:
        if index not in self.started:
            self.started.add(index)
            delta.role = "assistant"
        return self._chunk([ChunkChoice(index=index, delta=delta)])

    def event(self, event: Event) -> bytes | None:
        """The SSE bytes for ``event``, or ``None`` when it sends nothing by itself."""
        if type(event) is EncodedText:
            return self._encoded(event.literals)
        if type(event) is TextDelta:
            if event.index == 0 and 0 in self.started:
                return self._text_head + encoder.encode(event.text) + self._text_tail
            return self._delta(event.index, Delta(content=event.text))
        if type(event) is Done or type(event) is TokenUsage:
            return None  # sent by the tail; known at once (a failed ``isinstance`` costs more)
        if isinstance(event, Finish):
            prefix = b""
            if event.index not in self.started:
                prefix = self._delta(event.index, Delta(content=""))
            choice = ChunkChoice(index=event.index, delta=Delta(), finish_reason=event.reason)
            return prefix + self._chunk([choice])
        if isinstance(event, ReasoningDelta):
            return self._delta(event.index, Delta(reasoning_content=event.text))
        if isinstance(event, ToolCallDelta):
            call = ToolCall(
                index=event.tool_index,
                id=event.id,
                type="function" if event.id else None,
                function=ToolCallFunction(name=event.name, arguments=event.arguments),
            )
            return self._delta(event.index, Delta(tool_calls=[call]))
        return None

    def _encoded(self, literals: list[bytes]) -> bytes:
        """Text chunks of choice 0 around literals the upstream encoded: one join for all."""
        first = b""
        if 0 not in self.started:
            first = self._delta(0, Delta(content=decode_literals(literals[:1])[0]))
            literals = literals[1:]
            if not literals:
                return first
        return first + self._text_head + self._text_join.join(literals) + self._text_tail

    def usage(self, usage: TokenUsage) -> bytes:
        """The final usage chunk (``choices`` empty), as OpenAI sends it."""
        return self._chunk([], wire_usage(usage))

    def tail(self, collected: Collected, prompt_guess: int) -> list[bytes]:
        """What ends a complete stream: the usage chunk if asked for, and ``[DONE]``."""
        if self.include_usage:
            return [self.usage(collected.usage_or_estimate(prompt_guess)), SSE_DONE]
        return [SSE_DONE]

    @staticmethod
    def error(error: ApiError) -> bytes:
        """The event that ends a stream that failed after it started."""
        return sse_error(error)
