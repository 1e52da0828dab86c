"""CORS for browser clients of the ``/v1`` API (``cors_allowed_origins``; off by default).

A browser asks first (a preflight: ``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``), then sends the request with its ``Origin``. An allowed
origin gets ``Access-Control-Allow-Origin`` on every answer, errors and streams included, so that
a browser SDK can read the error; ``*`` in the setting answers ``*``. relaygate never sends
``Access-Control-Allow-Credentials``: the API's credential is the ``Authorization`` header, which
a preflight allows like any other header, and cookies are never needed (so ``*`` can never be
combined with credentials). The admin API and the console stay same-origin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from relaygate.api.http import Headers, Message, Scope, Send, header
from relaygate.errors import PermissionDenied

PREFIX = "/v1/"
"""The paths CORS covers."""
MAX_AGE = b"600"
"""Seconds a browser may keep a preflight's answer."""
EXPOSED = (
    b"x-request-id, x-relaygate-upstream, x-relaygate-model, x-should-retry, retry-after,"
    b" retry-after-ms"
)
"""Response headers a browser script may read (besides the CORS-safelisted ones)."""
_HEADER_LIST = re.compile(rb"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def check_origin(origin: str) -> str | None:
    """Why ``origin`` is not a valid ``cors_allowed_origins`` entry, or ``None``."""
    if origin == "*":
        return None
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{origin!r} is not an origin (scheme://host[:port], or *)"
    if origin != f"{parts.scheme}://{parts.netloc}" or parts.username or parts.password:
        return f"{origin!r} is not an origin: no path, query, user or trailing slash"
    return None


class Cors:
    """The allowed origins, and the headers they get."""

    def __init__(self, origins: Sequence[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.lower().encode() for o in origins if o != "*")

    def allowed(self, origin: bytes) -> bool:
        return self.any or origin.lower() in self.origins

    def _allow(self, origin: bytes) -> Headers:
        if self.any:
            return [(b"access-control-allow-origin", b"*")]
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]

    async def preflight(self, scope: Scope, send: Send, methods: Sequence[str]) -> None:
        """Answer a preflight: 204 with what the route allows, or 403 for another origin."""
        origin = header(scope, b"origin") or b""
        if not self.allowed(origin):
            raise PermissionDenied(
                "This origin may not call the API from a browser (cors_allowed_origins)"
            )
        allow = [*methods, "HEAD"] if "GET" in methods else list(methods)
        headers = [
            *self._allow(origin),
            (b"access-control-allow-methods", ", ".join(allow).encode()),
            (b"access-control-max-age", MAX_AGE),
        ]
        asked = header(scope, b"access-control-request-headers")
        if asked and _HEADER_LIST.match(asked.strip()):
            headers.append((b"access-control-allow-headers", asked.strip()))
        if not self.any:
            headers.append(
                (b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers")
            )
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def wrap(self, send: Send, origin: bytes) -> Send:
        """``send`` adding the CORS headers to the response's start (errors included)."""
        extra = [*self._allow(origin), (b"access-control-expose-headers", EXPOSED)]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors
