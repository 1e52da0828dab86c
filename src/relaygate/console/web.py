"""The console's HTTP plumbing: one :class:`Request` per call, one :class:`Page` answer, the
security headers every answer carries, and form and query parsing (pure ASGI, no framework)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from relaygate.accounts.principal import Principal
from relaygate.api.http import Receive, Scope, Send, header, read_body
from relaygate.errors import InvalidRequest, NotFound, PermissionDenied

if TYPE_CHECKING:
    from relaygate.app import Gateway

PREFIX = "/console"
MAX_FORM_BYTES = 64 * 1024
MAX_QUERY_BYTES = 4096
CSRF_FIELD = "csrf_token"
CSRF_HEADER = b"x-csrf-token"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HTML = b"text/html; charset=utf-8"


@dataclass(slots=True)
class Page:
    """An answer: HTML (or another body) with its status and extra headers."""

    body: bytes
    status: int = 200
    content_type: bytes = HTML
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cache: bytes = b"no-store"


def redirect(location: str, *, htmx: bool = False, status: int = 303) -> Page:
    """A redirect; an htmx request is told with ``HX-Redirect`` (a full page load)."""
    if htmx:
        return Page(b"", 200, headers=[(b"hx-redirect", location.encode())])
    return Page(b"", status, headers=[(b"location", location.encode())])


def _pairs(raw: bytes, what: str) -> dict[str, str]:
    try:
        text = raw.decode("utf-8") if what == "form" else raw.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
    except (UnicodeError, ValueError):
        raise InvalidRequest(f"The {what} is not valid URL-encoded text") from None
    return dict(pairs)


@dataclass(slots=True)
class Request:
    """One console request."""

    gw: Gateway
    scope: Scope
    receive: Receive
    params: dict[str, str]
    locale: str = "en"
    principal: Principal | None = None
    cookie: str | None = None
    csrf: str | None = None
    form: dict[str, str] = field(default_factory=dict)
    form_lists: dict[str, list[str]] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raw = self.scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            raise InvalidRequest(f"The query string is longer than {MAX_QUERY_BYTES} bytes")
        self.query = _pairs(raw, "query string")

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def htmx(self) -> bool:
        return header(self.scope, b"hx-request") == b"true"

    def header(self, name: bytes) -> str | None:
        value = header(self.scope, name)
        return value.decode("latin-1") if value is not None else None

    @property
    def user(self) -> Principal:
        """The signed-in principal (routes that need one are only reached with one)."""
        if self.principal is None:
            raise PermissionDenied("Sign in first")
        return self.principal

    def account_id(self) -> str:
        """The account a member's page shows: its own (an admin names one with ``account``)."""
        principal = self.user
        if principal.role == "admin":
            wanted = self.query.get("account") or self.form.get("account")
            if not wanted:
                raise NotFound("Choose an account first (from the Accounts page)")
            return wanted
        if principal.account_id is None:
            raise NotFound("This user belongs to no account")
        return principal.account_id

    async def read_form(self) -> dict[str, str]:
        kind = (self.header(b"content-type") or "").split(";")[0].strip().lower()
        body = await read_body(self.scope, self.receive, MAX_FORM_BYTES)
        if body and kind != "application/x-www-form-urlencoded":
            raise InvalidRequest("Forms are sent as application/x-www-form-urlencoded")
        self.form = _pairs(body, "form")
        for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
            self.form_lists.setdefault(name, []).append(value)
        return self.form

    def field(self, name: str, default: str = "") -> str:
        return self.form.get(name, default).strip()

    def next_path(self) -> str:
        """A ``next`` parameter that stays inside the console (anything else: the home)."""
        wanted = self.query.get("next") or self.form.get("next") or ""
        if wanted.startswith(PREFIX + "/") and not wanted.startswith("//") and "\\" not in wanted:
            return wanted
        return PREFIX + "/"


def here(request: Request) -> str:
    """The request's own path and query, quoted for a ``next`` parameter."""
    query = request.scope.get("query_string", b"").decode("ascii", "replace")
    return quote(request.path + ("?" + query if query else ""), safe="")


async def send_page(send: Send, page: Page) -> None:
    headers = [
        (b"content-type", page.content_type),
        (b"content-length", str(len(page.body)).encode()),
        (b"cache-control", page.cache),
        *SECURITY_HEADERS,
        *page.headers,
    ]
    await send({"type": "http.response.start", "status": page.status, "headers": headers})
    await send({"type": "http.response.body", "body": page.body})


def query_args(**values: Any) -> str:
    """A query string of the values that are set (for links that keep the filters)."""
    from urllib.parse import urlencode

    kept = {k: v for k, v in values.items() if v not in (None, "")}
    return ("?" + urlencode(kept)) if kept else ""
