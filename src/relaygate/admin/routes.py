"""The admin API's router: a table of routes with path parameters, and the one dispatch that
authenticates, decodes and validates the body with the route's msgspec type, calls the
handler and encodes its answer. Errors are the error hierarchy's, rendered by the app."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from relaygate.accounts.principal import Principal
from relaygate.admin import auth, cookies
from relaygate.admin.schemas import encoder
from relaygate.api.http import Receive, Scope, Send, read_body, send_bytes
from relaygate.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    excerpt,
)

if TYPE_CHECKING:
    from relaygate.app import Gateway

log = logging.getLogger("relaygate.admin")

PREFIX = "/admin/v1"
MAX_BODY = 256 * 1024
"""The largest admin request body, in bytes (the largest, 1,000 codes' request, is tiny)."""
MAX_QUERY = 4096
PAGE_DEFAULT = 50
PAGE_MAX = 200


@dataclass(slots=True)
class Call:
    """One admin request, authenticated and decoded."""

    gw: Gateway
    scope: Scope
    principal: Principal
    params: dict[str, str]
    query: dict[str, str]
    body: Any = None

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    def limit(self) -> int:
        raw = self.query.get("limit")
        if raw is None:
            return PAGE_DEFAULT
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= PAGE_MAX:
            raise InvalidRequest(f"limit must be between 1 and {PAGE_MAX}", param="limit")
        return int(raw)


@dataclass(slots=True)
class Reply:
    body: msgspec.Struct
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: method, path (``{name}`` for a parameter), handler and its types (the
    OpenAPI document is generated from them)."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[msgspec.Struct]
    body: type[msgspec.Struct] | None = None
    status: int = 200
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    public: bool = False

    @property
    def parts(self) -> list[str]:
        return self.path.strip("/").split("/")

    def match(self, parts: list[str]) -> dict[str, str] | None:
        mine = self.parts
        if len(mine) != len(parts):
            return None
        params: dict[str, str] = {}
        for pattern, part in zip(mine, parts, strict=True):
            if pattern.startswith("{"):
                if not part or len(part) > 80:
                    return None
                params[pattern[1:-1]] = part
            elif pattern != part:
                return None
        return params


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        parts = path.strip("/").split("/")
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(parts)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(
                f"Method {method[:16]} is not allowed on {PREFIX}{excerpt(path)}"
                f" (use {', '.join(allowed)})",
                allow=allowed,
            )
        raise NotFound(f"Unknown admin route: {method[:16]} {PREFIX}{excerpt(path)}")

    async def dispatch(self, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one ``/admin/v1`` request; returns its status (errors are raised)."""
        path = scope["path"][len(PREFIX) :].rstrip("/") or "/"
        route, params = self.find(scope["method"], path)
        # the address is counted before any credential is looked up (ratelimit.py)
        await gw.admin_limit.address(cookies.client_address(scope, gw.settings))
        if route.public:  # the OpenAPI document: nobody in particular, allowed nothing else
            principal = Principal(via="cli", id="anonymous", role="member")
        else:
            principal = await auth.authenticate(gw.store, gw.settings, scope)
            await gw.admin_limit.principal(principal.actor)
            auth.check_write(gw.settings, scope, principal)
        call = Call(gw, scope, principal, params, _query(scope))
        if route.body is not None:
            _json_only(call)
            call.body = decode(await read_body(scope, receive, MAX_BODY), route.body)
        reply = await route.handler(call)
        headers = [(b"cache-control", b"no-store"), *reply.headers]
        await send_bytes(send, reply.status, encoder.encode(reply.body), headers=headers)
        return reply.status


def _json_only(call: Call) -> None:
    """A body must say it is JSON: a cross-site HTML form can send only form encodings or
    ``text/plain`` without a preflight, so this keeps forms on other sites from writing (the
    sign-in route, which no cookie guards, included); a browser's cross-site request is
    refused outright."""
    kind = (call.header(b"content-type") or "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise InvalidRequest("The request body must be sent as Content-Type: application/json")
    if (call.header(b"sec-fetch-site") or "").lower() == "cross-site":
        raise PermissionDenied("Cross-site requests are not accepted by the admin API")


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        raise InvalidRequest(f"The query string is longer than {MAX_QUERY} bytes")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeError:
        raise InvalidRequest("The query string must be URL-encoded ASCII") from None
    return dict(pairs)


def decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    """A request body as ``kind``, or 400 naming the field at fault (never echoing values)."""
    if not body.strip():
        raise InvalidRequest("The request body must be a JSON object")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = None
        if "at `$." in message:
            param = message.rsplit("at `$.", 1)[1].rstrip("`").split("[")[0].split(".")[0]
        raise InvalidRequest(f"Invalid body: {message[:300]}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {str(exc)[:200]}") from None


async def announce(gw: Gateway, record_id: str) -> None:
    """Apply a key or account change in this process now, and tell every replica through
    Redis when it is configured (they also poll the store within ``key_refresh_seconds``, so a
    failure here only delays the change)."""
    try:
        await gw.keys.refresh()
        publish = getattr(gw.gate, "publish_key_change", None)
        if publish is not None:
            await publish(record_id)
    except Exception as exc:  # the store holds the change; polling applies it
        log.warning("could not announce the change of %s at once: %s", record_id, exc)
