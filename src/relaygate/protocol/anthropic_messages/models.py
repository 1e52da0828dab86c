"""Anthropic's Models API shape (``GET /v1/models`` and ``/v1/models/{id}`` as Anthropic's SDKs
and Claude Code call them: with an ``anthropic-version`` header).

A model is ``{"type": "model", "id", "display_name", "created_at", "max_tokens", ...}``; the list
is one page, ``{"data", "has_more", "first_id", "last_id"}``, chosen by ``limit`` (1 to 1000,
default 20) and ``after_id`` or ``before_id`` as Anthropic's API does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from relaygate.errors import InvalidRequest, excerpt

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_info(name: str, created: int, max_tokens: int) -> dict[str, Any]:
    """One model as Anthropic's ``ModelInfo`` (``created_at``: when relaygate started, as the
    OpenAI shape's ``created``)."""
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lifecycle": "active",
        "max_tokens": max_tokens,
    }


def _limit(query: dict[str, list[str]]) -> int:
    given = query.get("limit", [str(DEFAULT_LIMIT)])[-1]
    if not given.isdigit() or not 1 <= int(given) <= MAX_LIMIT:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}, not {excerpt(given)}", param="limit"
        )
    return int(given)


def model_page(models: list[dict[str, Any]], query_string: bytes) -> dict[str, Any]:
    """The page of ``models`` (in the catalog's order) that the query asks for."""
    query = parse_qs(query_string.decode("latin-1"))
    limit = _limit(query)
    ids = [model["id"] for model in models]
    after = query.get("after_id", [None])[-1]
    before = query.get("before_id", [None])[-1]
    if before is not None:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = ids.index(after) + 1 if after in ids else (len(ids) if after else 0)
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    page = models[start:end]
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
