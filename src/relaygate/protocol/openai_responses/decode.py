"""Decoding a Responses request, and translating it into the one internal request.

:func:`decode_responses_request` checks the body (the chat decoder's bounds: body depth, sizes;
unknown fields refused by name) and normalises ``input`` into items. :func:`to_chat` turns the
items (after any stored history is put before them) into a chat-completions body and its
:class:`~relaygate.protocol.types.ChatRequest`: what every provider understands.

What the translation does with the Responses-only parts:

* ``instructions`` become the first message (``system``); ``developer`` messages stay
  ``developer``.
* ``function_call`` items become an assistant message's ``tool_calls`` (consecutive calls, and
  the assistant text just before them, are one message); ``function_call_output`` items
  become ``tool`` messages.
* ``reasoning`` items are dropped: their ``encrypted_content`` is only readable by the OpenAI
  deployment that wrote it, and a summary is not the reasoning a model could continue from.
  They reach upstreams that speak Responses unchanged (the pass-through).
* Namespaced function tools are flattened as ``namespace__name`` and split again in the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from relaygate.errors import InvalidRequest, excerpt
from relaygate.protocol.openai_responses.items import (
    NAMESPACE_JOIN,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputImage,
    Item,
    MessageItem,
    Part,
    Refusal,
    check_item,
    check_tools,
)
from relaygate.protocol.openai_responses.types import UNSUPPORTED, ResponsesRequest
from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import _decode_raw, invalid_value

_FIELDS = frozenset(ResponsesRequest.__struct_fields__)


@dataclass(slots=True)
class ResponsesCall:
    """A checked Responses request."""

    request: ResponsesRequest
    raw: dict[str, Any]
    """The body as sent (passed through to upstreams that speak Responses)."""
    items: list[Item]
    """``input`` as checked items (a string ``input`` is one user message)."""
    tools: list[tuple[str | None, FunctionTool]]


def decode_responses_request(body: bytes) -> ResponsesCall:
    if not body:
        raise InvalidRequest("Request body is empty: send a JSON object with model and input")
    raw = _decode_raw(body)
    for name in raw:
        if name not in _FIELDS:
            reason = UNSUPPORTED.get(name)
            if reason is None:
                raise InvalidRequest(f"Unknown parameter: {excerpt(name)}", param=name[:128])
            raise InvalidRequest(f"{name} is not supported: {reason}", param=name)
    try:
        request = msgspec.convert(raw, ResponsesRequest)
    except msgspec.ValidationError as exc:
        raise invalid_value(exc) from None
    if request.background:
        raise InvalidRequest(
            f"background is not supported: {UNSUPPORTED['background']}", param="background"
        )
    if isinstance(request.input, str):
        items: list[Item] = (
            [MessageItem(role="user", content=request.input)] if request.input else []
        )
    else:
        items = [check_item(item, f"input[{i}]") for i, item in enumerate(request.input)]
    tools = check_tools(request.tools) if request.tools else []
    if request.text is not None and request.text.format is not None:
        _response_format(request.text.format)  # checked now: a 400 before anything else
    if request.tool_choice is not None:
        _tool_choice(request.tool_choice, tools)
    return ResponsesCall(request, raw, items, tools)


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest(
                "text.format of type json_schema needs a name and a schema object",
                param="text.format",
            )
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        f"Invalid text.format type {excerpt(kind)}: use text, json_object or json_schema",
        param="text.format.type",
    )


def flat_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{NAMESPACE_JOIN}{name}" if namespace else name


def _tool_choice(choice: str | dict[str, Any], tools: list[tuple[str | None, FunctionTool]]) -> Any:
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        raise InvalidRequest(
            f"Invalid tool_choice {excerpt(choice)}: use auto, none, required or a function",
            param="tool_choice",
        )
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        name = choice["name"]
        if not any(tool.name == name for _, tool in tools):
            raise InvalidRequest(
                f"tool_choice names a function that is not in tools: {excerpt(name)}",
                param="tool_choice.name",
            )
        space = next(ns for ns, tool in tools if tool.name == name)
        return {"type": "function", "function": {"name": flat_name(space, name)}}
    raise InvalidRequest(
        'tool_choice must be auto, none, required or {"type": "function", "name": ...}'
        " (hosted tools and allowed_tools are not supported by relaygate)",
        param="tool_choice",
    )


def _chat_tools(tools: list[tuple[str | None, FunctionTool]]) -> list[dict[str, Any]]:
    out = []
    for space, tool in tools:
        function: dict[str, Any] = {"name": flat_name(space, tool.name)}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if tool.strict is not None:
            function["strict"] = tool.strict
        out.append({"type": "function", "function": function})
    return out


def _parts(content: str | list[Part]) -> str | list[dict[str, Any]]:
    """Chat content for a user, system or developer message's parts."""
    if isinstance(content, str):
        return content
    out: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, InputImage):
            url: dict[str, Any] = {"url": part.image_url}
            if part.detail is not None:
                url["detail"] = part.detail
            out.append({"type": "image_url", "image_url": url})
        else:
            out.append({"type": "text", "text": _part_text(part)})
    return out


def _part_text(part: Part) -> str:
    return part.refusal if isinstance(part, Refusal) else str(getattr(part, "text", ""))


def _text(content: str | list[Part]) -> str:
    if isinstance(content, str):
        return content
    return "".join(_part_text(p) for p in content)


ImagePlaces = dict[tuple[int, int], tuple[int, int]]
"""Where each chat image part came from: (message, part) to (input item, part)."""


def chat_messages(
    instructions: str | None, items: list[Item], places: ImagePlaces | None = None
) -> list[dict[str, Any]]:
    """The chat messages of ``items`` (see the module docstring); ``places`` receives where
    each image part came from."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(items):
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                messages.append({"role": "assistant", "content": _text(item.content)})
                continue
            if places is not None and not isinstance(item.content, str):
                for p, part in enumerate(item.content):
                    if isinstance(part, InputImage):
                        places[(len(messages), p)] = (i, p)
            messages.append({"role": item.role, "content": _parts(item.content)})
        elif isinstance(item, FunctionCallItem):
            _add_call(messages, item)
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                {"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output)}
            )
        # reasoning items: dropped (module docstring)
    return messages


def _add_call(messages: list[dict[str, Any]], item: FunctionCallItem) -> None:
    name = flat_name(item.namespace, item.name)
    call = {
        "id": item.call_id,
        "type": "function",
        "function": {"name": name, "arguments": item.arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last["content"]:
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def to_chat(
    call: ResponsesCall, items: list[Item], places: ImagePlaces | None = None
) -> tuple[ChatRequest, dict[str, Any]]:
    """The internal request for ``call`` whose input is ``items`` (history included)."""
    request = call.request
    messages = chat_messages(request.instructions, items, places)
    if not messages:
        raise InvalidRequest("input is empty: send a string or at least one item", param="input")
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.stream:
        body["stream"] = True
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
                 "prompt_cache_key", "service_tier"):  # fmt: skip
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    if call.tools:
        body["tools"] = _chat_tools(call.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice, call.tools)
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    if request.text is not None:
        if request.text.format is not None and (fmt := _response_format(request.text.format)):
            body["response_format"] = fmt
        if request.text.verbosity is not None:
            body["verbosity"] = request.text.verbosity
    if request.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    try:
        return msgspec.convert(body, ChatRequest), body
    except msgspec.ValidationError as exc:
        raise invalid_value(exc) from None
