"""Parts of a Messages request that make Anthropic charge beyond the tokens relaygate bills.

A body passed through to an Anthropic upstream reaches it as the client sent it, so what
:mod:`relaygate.accounting.fields` does for chat completions is done here for Messages: each
part below gets 400 naming it, before admission and any upstream call, unless the model's
``allow_fields`` names it:

- a server tool (``tools[i]`` with a ``type`` other than ``custom``: web search and fetch, code
  execution, ...), named by its ``type`` (``web_search_20250305``) or that type without its
  date (``web_search``);
- ``mcp_servers`` and ``container``, and any other top-level field relaygate does not know
  (Anthropic adds priced features as new fields), named by the field;
- a ``document`` block whose source is fetched or stored upstream (``url``, ``file``), named
  ``document_url`` / ``document_file``.

The client's ``anthropic-beta`` values are filtered separately (``messages_betas``).
"""

from __future__ import annotations

import re
from typing import Any

from relaygate.errors import InvalidRequest, excerpt
from relaygate.settings import MESSAGES_TOKEN_FIELDS

_DATED = re.compile(r"_\d{8}$")


def _family(kind: str) -> str:
    return _DATED.sub("", kind)


def _refused_block(body: dict[str, Any], allowed: frozenset[str]) -> tuple[str, str] | None:
    """The first ``document`` block with a url/file source not allowed: (name, param)."""
    for m, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for b, block in enumerate(content):
            found = _document(block, allowed)
            if found is not None:
                return found, f"messages[{m}].content[{b}].source"
            inner = block.get("content") if isinstance(block, dict) else None
            for i, part in enumerate(inner if isinstance(inner, list) else ()):
                found = _document(part, allowed)
                if found is not None:
                    return found, f"messages[{m}].content[{b}].content[{i}].source"
    return None


def _document(block: Any, allowed: frozenset[str]) -> str | None:
    if not isinstance(block, dict) or block.get("type") != "document":
        return None
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    name = f"document_{kind}"
    if kind in ("url", "file") and name not in allowed:
        return name
    return None


def refused_part(body: dict[str, Any], allow_fields: list[str]) -> tuple[str, str] | None:
    """The first priced part of ``body`` that ``allow_fields`` does not name: (name, param)."""
    allowed = frozenset(allow_fields)
    for name in body:
        if name not in MESSAGES_TOKEN_FIELDS and name not in allowed and body[name] is not None:
            return name, name
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in (None, "custom") or not isinstance(kind, str):
            continue
        if kind not in allowed and _family(kind) not in allowed:
            return kind, f"tools[{i}]"
    return _refused_block(body, allowed)


def check_priced_parts(body: dict[str, Any], model: str, allow_fields: list[str]) -> None:
    """400 naming the first priced part of ``body`` that ``model`` does not allow."""
    refused = refused_part(body, allow_fields)
    if refused is None:
        return
    name, param = refused
    where = excerpt(name) if param == name else f"{param} ({excerpt(name)})"
    raise InvalidRequest(
        f"{where} is not available for model {excerpt(model)}: it changes what the"
        " upstream charges beyond the tokens relaygate bills; leave it out (or ask the"
        f" operator to add {excerpt(name)} to the model's allow_fields)",
        param=param,
    )


def allowed_betas(value: str, allowed: list[str]) -> list[str]:
    """The values of an ``anthropic-beta`` header that are in ``allowed`` (others dropped)."""
    return [beta for part in value.split(",") if (beta := part.strip()) in allowed]
