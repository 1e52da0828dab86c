"""Decoding and validating a chat-completions request body.

What a client controls is bounded before any work that grows with it: the body's nesting depth
(:data:`MAX_DEPTH`), the length of ``model`` and the counts OpenAI documents (``stop``,
``tools``, ``logit_bias``, ``n``; see :mod:`relaygate.protocol.types`). Error messages quote
client values only as short excerpts (:func:`relaygate.errors.excerpt`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import chain, compress
from typing import Any, TypeVar

import msgspec

from relaygate.errors import InvalidRequest, excerpt
from relaygate.protocol.types import ChatRequest, ImagePart, UserMessage

T = TypeVar("T")

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects accepted in a body (the body itself is level 1)."""

_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")
_PARAM_CHARS = 128
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')
_SCAN_BYTES = 1 << 20
_raw_decoder = msgspec.json.Decoder(dict[str, Any])


def _param_of(error: msgspec.ValidationError) -> tuple[str | None, str]:
    text = str(error)
    match = _PATH.search(text)
    path = match.group(1) if match else ""
    problem = text[: match.start()] if match else text
    missing = _MISSING.search(problem)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    # msgspec quotes the offending value in some messages (an unknown enum value, say).
    return (path[:_PARAM_CHARS] or None), _bounded(problem)


_QUOTED = re.compile(r"'(.*)'", re.DOTALL)


def _bounded(problem: str, limit: int = 200) -> str:
    """msgspec's message with any value it quotes cut to an excerpt, and the whole bounded."""
    problem = _QUOTED.sub(lambda m: excerpt(m.group(1)), problem, count=1)
    return problem if len(problem) <= limit else f"{problem[:limit]}... (cut)"


_CONTAINERS = frozenset((dict, list))
_is_container = _CONTAINERS.__contains__


def _children(container: dict[str, Any] | list[Any]) -> Iterable[Any]:
    return container.values() if type(container) is dict else container


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels: a walk by levels,
    without recursion, whose per-item work (listing children, keeping the containers) runs in C."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        children = list(chain.from_iterable(map(_children, level)))
        level = list(compress(children, map(_is_container, map(type, children))))
    return False


def _too_deep_error(param: str | None) -> InvalidRequest:
    where = f" at {excerpt(param)}" if param else ""
    return InvalidRequest(
        f"Request body is nested too deeply{where}: at most {MAX_DEPTH} levels of arrays and"
        " objects are accepted",
        param=param[:_PARAM_CHARS] if param else None,
    )


def check_depth(value: Any, param: str | None, limit: int = MAX_DEPTH) -> None:
    """400 naming ``param`` when ``value`` nests deeper than ``limit`` levels."""
    if _too_deep(value, limit):
        raise _too_deep_error(param)


def decode_json(text: str | bytes, param: str) -> Any:
    """Decode client JSON found inside a request (tool-call arguments, say), depth-bounded."""
    try:
        value = msgspec.json.decode(text)
    except RecursionError:
        raise _too_deep_error(param) from None
    check_depth(value, param)
    return value


def _deep_field(body: bytes) -> str | None:
    """The top-level field whose value nests too deeply, found by a scan of the body's first
    MiB (a body msgspec could not decode for its depth; strings are skipped whole)."""
    depth, field = 0, None
    for token in _TOKEN.finditer(body, 0, _SCAN_BYTES):
        text = token.group()
        if text in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return field
        elif text in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and text.endswith(b":"):
            field = text.rstrip(b": \t\r\n")[1:-1].decode("utf-8", "replace")
    return None


_COUNT_BYTES = 64 * 1024
"""Bodies up to this size count their brackets before walking their values."""


_NEST_BYTES = 2 * (MAX_DEPTH + 1)
"""The shortest JSON that nests deeper than MAX_DEPTH: that many brackets, opened and closed."""


def _may_nest(body: bytes) -> bool:
    size = len(body)
    if size < _NEST_BYTES:
        return False
    if size > _COUNT_BYTES:
        return True
    return body.count(b"[") + body.count(b"{") > MAX_DEPTH


def _decode_raw(body: bytes) -> dict[str, Any]:
    try:
        raw = _raw_decoder.decode(body)
    except RecursionError:
        # msgspec gives up near the interpreter's recursion limit: far deeper than MAX_DEPTH.
        raise _too_deep_error(_deep_field(body)) from None
    except msgspec.ValidationError as exc:
        if not body.lstrip().startswith(b"{"):
            raise InvalidRequest("Request body must be a JSON object") from None
        param, problem = _param_of(exc)
        where = f" at {excerpt(param)}" if param else ""
        raise InvalidRequest(
            f"Request body holds a value that cannot be read{where}: {problem}", param=param
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {_bounded(str(exc))}") from None
    # Fewer opening brackets than MAX_DEPTH cannot nest deeper: most bodies skip the walk. A
    # large body is walked at once: counting its bytes (an image's base64, say) costs more than
    # walking its few decoded values.
    if _may_nest(body) and _too_deep(raw, MAX_DEPTH):
        # The body object is level 1, so each field's value may nest MAX_DEPTH - 1 levels.
        for name, value in raw.items():
            check_depth(value, name, MAX_DEPTH - 1)
    return raw


def decode_object(body: bytes) -> dict[str, Any]:
    """A request body as a dict: 400 when it is not a JSON object or nests too deeply."""
    if not body:
        raise InvalidRequest("Request body is empty: send a JSON object")
    return _decode_raw(body)


def convert_request(raw: dict[str, Any], cls: type[T]) -> T:
    """``raw`` checked as ``cls``: 400 naming the first field that is wrong."""
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        param, problem = _param_of(exc)
        where = excerpt(param) if param else "the request"
        raise InvalidRequest(f"Invalid value for {where}: {problem}", param=param) from None


def decode_chat_request(body: bytes) -> tuple[ChatRequest, dict[str, Any]]:
    """Return the checked request and the raw body as a dict (for pass-through fields)."""
    if not body:
        raise InvalidRequest("Request body is empty: send a JSON object with model and messages")
    raw = _decode_raw(body)
    try:
        request = msgspec.convert(raw, ChatRequest)
    except msgspec.ValidationError as exc:
        param, problem = _param_of(exc)
        where = excerpt(param) if param else "the request"
        raise InvalidRequest(f"Invalid value for {where}: {problem}", param=param) from None
    return request, raw


def reparse(raw: dict[str, Any]) -> ChatRequest:
    """The typed request of a body relaygate rewrote itself (images inlined, say)."""
    return msgspec.convert(raw, ChatRequest)


ImageAt = tuple[int, int, ImagePart]
"""An image part and where it is: (message index, part index, part)."""


def images_of(request: ChatRequest) -> list[ImageAt]:
    """Every image part as (message index, part index, part)."""
    found: list[ImageAt] = []
    for m, message in enumerate(request.messages):
        if isinstance(message, UserMessage) and isinstance(message.content, list):
            for p, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((m, p, part))
    return found


def invalid_value(error: msgspec.ValidationError, prefix: str | None = None) -> InvalidRequest:
    """The 400 for a value msgspec refused, naming its path (under ``prefix``, when the value
    was a part of the body checked on its own: ``input[3]``, say)."""
    param, problem = _param_of(error)
    if prefix:
        param = prefix if not param else prefix + (param if param[0] == "[" else f".{param}")
        param = param[:_PARAM_CHARS]
    where = excerpt(param) if param else "the request"
    return InvalidRequest(f"Invalid value for {where}: {problem}", param=param)
