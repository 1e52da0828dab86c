"""Checking a Responses request's ``input`` items and ``tools``, one by one.

Each item is checked against its own struct (unknown fields refused), so that a 400 names the
item and field at fault (``input[3].content[0].image_url``). Checked items are returned
normalised (``type`` always present, ``content`` always a list of parts): the form relaygate
translates and stores.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from relaygate.errors import InvalidRequest, excerpt
from relaygate.protocol.openai_responses.types import Id
from relaygate.protocol.validate import invalid_value

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Detail = Literal["auto", "low", "high"]
Role = Literal["user", "assistant", "system", "developer"]


class InputText(msgspec.Struct, tag_field="type", tag="input_text", forbid_unknown_fields=True):
    text: str


class InputImage(msgspec.Struct, tag_field="type", tag="input_image", forbid_unknown_fields=True):
    image_url: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    file_id: str | None = None
    detail: Detail | None = None


class InputFile(msgspec.Struct, tag_field="type", tag="input_file"):
    """Refused (relaygate has no files API); declared to name it in the 400."""


class OutputText(msgspec.Struct, tag_field="type", tag="output_text", forbid_unknown_fields=True):
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(msgspec.Struct, tag_field="type", tag="refusal", forbid_unknown_fields=True):
    refusal: str


Part = InputText | InputImage | InputFile | OutputText | Refusal


class MessageItem(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: str | list[Part]
    type: Literal["message"] = "message"
    id: Id | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["function_call"]
    call_id: Id
    name: Name
    arguments: str
    namespace: Name | None = None
    id: Id | None = None
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["function_call_output"]
    call_id: Id
    output: str | list[Part]
    id: Id | None = None
    status: str | None = None


class ReasoningItem(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["reasoning"]
    summary: list[dict[str, Any]] = msgspec.field(default_factory=list)
    id: Id | None = None
    encrypted_content: str | None = None
    content: list[dict[str, Any]] | None = None
    status: str | None = None


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem

_ITEMS: dict[str, type[Item]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
}


def check_item(raw: Any, param: str) -> Item:
    """One input item, checked (400 naming ``param`` and the field at fault)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("Each input item must be an object", param=param)
    kind = raw.get("type", "message")
    struct = _ITEMS.get(kind) if isinstance(kind, str) else None
    if struct is None:
        raise InvalidRequest(
            f"Input items of type {excerpt(kind)} are not supported by relaygate: it serves"
            " messages, function_call, function_call_output and reasoning items",
            param=f"{param}.type",
        )
    try:
        item = msgspec.convert(raw, struct)
    except msgspec.ValidationError as exc:
        raise invalid_value(exc, param) from None
    if isinstance(item, MessageItem):
        _check_parts(item.role, item.content, f"{param}.content")
    elif isinstance(item, FunctionCallOutputItem) and isinstance(item.output, list):
        _check_parts("tool", item.output, f"{param}.output")
    return item


def _check_parts(role: str, content: str | list[Part], param: str) -> None:
    if isinstance(content, str):
        return
    for p, part in enumerate(content):
        where = f"{param}[{p}]"
        if isinstance(part, InputFile):
            raise InvalidRequest(
                "input_file parts are not supported by relaygate (it has no files API)",
                param=where,
            )
        if isinstance(part, InputImage):
            if role != "user":
                raise InvalidRequest(
                    f"input_image parts are accepted in user messages only (not {role})",
                    param=where,
                )
            if part.image_url is None:
                raise InvalidRequest(
                    "input_image needs image_url (an https or data: URL); file_id is not"
                    " supported by relaygate (it has no files API)",
                    param=f"{where}.image_url",
                )


class FunctionTool(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["function"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None
    defer_loading: bool | None = None
    output_schema: dict[str, Any] | None = None
    allowed_callers: list[str] | None = None


class NamespaceTool(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["namespace"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    tools: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=128)]
    description: str | None = None


NAMESPACE_JOIN = "__"
"""Joins a namespace and a function's name into the one name other providers see."""


def check_tools(tools: list[dict[str, Any]]) -> list[tuple[str | None, FunctionTool]]:
    """Function tools as (namespace, tool); namespaces are flattened."""
    found: list[tuple[str | None, FunctionTool]] = []
    for t, raw in enumerate(tools):
        param = f"tools[{t}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        try:
            if kind == "namespace":
                space = msgspec.convert(raw, NamespaceTool)
                for f, inner in enumerate(space.tools):
                    where = f"{param}.tools[{f}]"
                    try:
                        found.append((space.name, msgspec.convert(inner, FunctionTool)))
                    except msgspec.ValidationError as exc:
                        raise invalid_value(exc, where) from None
                continue
            if kind == "function":
                found.append((None, msgspec.convert(raw, FunctionTool)))
                continue
        except msgspec.ValidationError as exc:
            raise invalid_value(exc, param) from None
        raise InvalidRequest(
            f"Tools of type {excerpt(kind)} are not supported by relaygate: it serves function"
            " tools (and namespaces of them); hosted tools such as web_search are not served"
            ' (Codex CLI: set web_search = "disabled")',
            param=f"{param}.type",
        )
    return found
