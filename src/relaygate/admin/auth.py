"""Who is calling the admin API: the chain of credentials it accepts.

1. ``Authorization: Bearer <admin token>`` (``rga-...``): an admin (scripts). An API key
   (``sk-...``) is refused with 401 before anything is looked up: API keys are never accepted
   here, and admin tokens are never accepted as API keys (the key cache holds only API keys).
2. Else the console's session cookie, checked by the identity layer's ``verify_session``: an
   admin or a member (a member sees only its own account). A cookie-authenticated write needs
   the session's CSRF token in ``X-CSRF-Token`` (the identity layer's ``check_csrf``).
3. Anything else: 401.

The session functions are a seam (:data:`SESSIONS`): until the identity layer plugs in its own,
no cookie authenticates anyone.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from relaygate.accounts.principal import Principal
from relaygate.accounts.tokens import verify_admin_token
from relaygate.api.http import Scope, header
from relaygate.errors import AuthenticationFailed, PermissionDenied
from relaygate.keys.tokens import KEY_PREFIX
from relaygate.store.sql import SqlStore

VerifySession = Callable[[SqlStore, str, str | None], Awaitable[Principal | None]]
"""``(store, cookie value, client address) -> Principal | None``."""
CheckCsrf = Callable[[SqlStore, Principal, str | None], Awaitable[None] | None]
"""``(store, principal, token) -> None``; raises :class:`PermissionDenied` on a bad token."""
ClientAddress = Callable[[Scope], str | None]

SESSION_COOKIE = "relaygate_session"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})


async def _no_sessions(store: SqlStore, cookie: str, address: str | None) -> Principal | None:
    return None


def _no_csrf(store: SqlStore, principal: Principal, token: str | None) -> None:
    raise PermissionDenied("Console sessions cannot write through the admin API in this build")


def _peer_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


@dataclass(slots=True)
class SessionSeam:
    """Where the identity layer plugs in (``accounts/sessions.py``, ``admin/cookies.py``)."""

    verify_session: VerifySession = _no_sessions
    check_csrf: CheckCsrf = _no_csrf
    client_address: ClientAddress = _peer_address
    cookie_name: str = SESSION_COOKIE


SESSIONS = SessionSeam()


def _cookie(scope: Scope, name: str) -> str | None:
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _bearer(raw: bytes) -> str:
    scheme, _, token = raw.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "Malformed Authorization header: expected 'Authorization: Bearer <admin token>'"
        )
    return token


async def authenticate(store: SqlStore, scope: Scope) -> Principal:
    """The principal behind the request, or 401."""
    address = SESSIONS.client_address(scope)
    authorization = header(scope, b"authorization")
    if authorization is not None:
        token = _bearer(authorization)
        if token.startswith(KEY_PREFIX):
            raise AuthenticationFailed(
                "API keys are not accepted by the admin API: use an admin token"
                " (relaygate admin-token create --name NAME)"
            )
        principal = await verify_admin_token(store, token, address)
        if principal is None:
            raise AuthenticationFailed("The admin API takes admin tokens (rga-...)")
        return principal
    cookie = _cookie(scope, SESSIONS.cookie_name)
    if cookie:
        principal = await SESSIONS.verify_session(store, cookie, address)
        if principal is not None:
            return principal
        raise AuthenticationFailed("The session has expired or was signed out: sign in again")
    raise AuthenticationFailed(
        "The admin API needs 'Authorization: Bearer <admin token>' or a console session"
    )


async def check_write(store: SqlStore, scope: Scope, principal: Principal) -> None:
    """A cookie-authenticated write needs its session's CSRF token (403 otherwise)."""
    if principal.via != "session" or scope["method"] in SAFE_METHODS:
        return
    token = header(scope, CSRF_HEADER)
    result = SESSIONS.check_csrf(
        store, principal, token.decode("latin-1") if token is not None else None
    )
    if inspect.isawaitable(result):
        await result
