"""Decoding and validating a chat-completions request body."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from relaygate.errors import InvalidRequest
from relaygate.protocol.types import ChatRequest, ImagePart, UserMessage

_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_raw_decoder = msgspec.json.Decoder(dict[str, Any])


def _param_of(error: msgspec.ValidationError) -> tuple[str | None, str]:
    text = str(error)
    match = _PATH.search(text)
    path = match.group(1) if match else ""
    problem = text[: match.start()] if match else text
    missing = _MISSING.search(problem)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return (path or None), problem


def decode_chat_request(body: bytes) -> tuple[ChatRequest, dict[str, Any]]:
    """Return the checked request and the raw body as a dict (for pass-through fields)."""
    if not body:
        raise InvalidRequest("Request body is empty: send a JSON object with model and messages")
    try:
        raw = _raw_decoder.decode(body)
    except msgspec.ValidationError as exc:
        if not body.lstrip().startswith(b"{"):
            raise InvalidRequest("Request body must be a JSON object") from None
        param, problem = _param_of(exc)
        where = f" at '{param}'" if param else ""
        raise InvalidRequest(
            f"Request body holds a value that cannot be read{where}: {problem}", param=param
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from None
    try:
        request = msgspec.convert(raw, ChatRequest)
    except msgspec.ValidationError as exc:
        param, problem = _param_of(exc)
        where = f"'{param}'" if param else "the request"
        raise InvalidRequest(f"Invalid value for {where}: {problem}", param=param) from None
    return request, raw


def reparse(raw: dict[str, Any]) -> ChatRequest:
    """The typed request of a body relaygate rewrote itself (images inlined, say)."""
    return msgspec.convert(raw, ChatRequest)


def images_of(request: ChatRequest) -> list[tuple[int, int, ImagePart]]:
    """Every image part as (message index, part index, part)."""
    found: list[tuple[int, int, ImagePart]] = []
    for m, message in enumerate(request.messages):
        if isinstance(message, UserMessage) and isinstance(message.content, list):
            for p, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((m, p, part))
    return found
