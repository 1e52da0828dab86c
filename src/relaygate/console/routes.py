"""The console's router: the route table, and the one dispatch that signs the request in,
checks the CSRF token of every write, calls the page and renders errors as pages."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from relaygate.accounts import sessions
from relaygate.admin import cookies
from relaygate.api.http import Receive, Scope, Send
from relaygate.console import assets, i18n
from relaygate.console.render import render
from relaygate.console.web import (
    CSRF_FIELD,
    CSRF_HEADER,
    PREFIX,
    Page,
    Request,
    here,
    redirect,
    send_page,
)
from relaygate.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
)

if TYPE_CHECKING:
    from relaygate.app import Gateway

log = logging.getLogger("relaygate.console")

Handler = Callable[[Request], Awaitable[Page]]
Who = Literal["anyone", "member", "admin", "signed_in"]
"""Who may open a route: anyone, a member (a customer's pages), an admin, or either."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    who: Who = "signed_in"

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.path)


_PARAM = re.compile(r"\{(\w+)\}")
_compiled: dict[str, re.Pattern[str]] = {}


def _compile(path: str) -> re.Pattern[str]:
    found = _compiled.get(path)
    if found is None:
        regex = _PARAM.sub(r"(?P<\1>[A-Za-z0-9_-]{1,80})", path.replace(".", r"\."))
        found = _compiled[path] = re.compile(regex + r"\Z")
    return found


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, match.groupdict()
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(f"Use {', '.join(allowed)} here", allow=allowed)
        raise NotFound("There is no such page in the console")

    async def dispatch(self, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one ``/console`` request; returns its status."""
        path = scope["path"]
        if path.startswith(assets.STATIC_PREFIX):
            page = _static(scope)
        else:
            page = await self._page(gw, scope, receive, path.rstrip("/") or PREFIX)
        await send_page(send, page)
        return page.status

    async def _page(self, gw: Gateway, scope: Scope, receive: Receive, path: str) -> Page:
        request = Request(gw, scope, receive, {}) if _query_ok(scope) else None
        if request is None:
            return Page(b"query string too long", 400, b"text/plain; charset=utf-8")
        request.locale = i18n.choose(
            cookies.read_cookie(scope, i18n.COOKIE), request.header(b"accept-language")
        )
        try:
            route, request.params = self.find(request.method, path)
            await _sign_in(request)
            refusal = _refusal(request, route)
            if refusal is not None:
                return refusal
            if request.method == "POST":
                await request.read_form()
                _check_write(request, route)
            return await route.handler(request)
        except ApiError as exc:
            return error_page(request, exc)
        except Exception:
            log.exception("console error on %s %s", request.method, path)
            return error_page(request, InternalError("The console failed on this page"))


def _query_ok(scope: Scope) -> bool:
    return len(scope.get("query_string", b"")) <= 4096


def _static(scope: Scope) -> Page:
    asset = assets.find(scope["path"])
    if asset is None or scope["method"] not in ("GET", "HEAD"):
        return Page(b"not found", 404, b"text/plain; charset=utf-8")
    cache = assets.LONG_CACHE if scope.get("query_string") else b"no-cache"
    return Page(asset.body, 200, asset.content_type, cache=cache)


async def _sign_in(request: Request) -> None:
    gw = request.gw
    cookie = cookies.session_cookie_value(request.scope, gw.settings)
    if not cookie:
        return
    address = cookies.client_address(request.scope, gw.settings)
    principal = await sessions.verify_session(gw.store, cookie, address)
    if principal is not None:
        request.principal, request.cookie = principal, cookie
        request.csrf = sessions.csrf_token(cookie)


def _refusal(request: Request, route: Route) -> Page | None:
    """A redirect to the sign-in page, or 403, when the route is not for this caller."""
    if route.who == "anyone":
        return None
    principal = request.principal
    if principal is None:
        target = f"{PREFIX}/sign-in?next={here(request)}"
        return redirect(target, htmx=request.htmx)
    if route.who == "admin" and principal.role != "admin":
        raise PermissionDenied("This page is for the gateway's operators")
    if route.who == "member" and principal.role == "admin" and not request.query.get("account"):
        return redirect(f"{PREFIX}/accounts", htmx=request.htmx)
    return None


def _check_write(request: Request, route: Route) -> None:
    """Every write: never cross-site, and with the session's CSRF token when signed in."""
    if (request.header(b"sec-fetch-site") or "").lower() == "cross-site":
        raise PermissionDenied("Cross-site requests are not accepted by the console")
    if request.principal is None:
        return
    token = request.header(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    sessions.check_csrf(request.cookie, request.principal, token)


def error_page(request: Request, error: ApiError) -> Page:
    """An error as a page, with its status (and ``Retry-After`` or ``Allow``)."""
    page = render(request, "error.html", error.status, message=str(error), code=error.status)
    page.headers.extend(error.headers())
    return page
