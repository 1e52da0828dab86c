"""Who is calling the admin API: the chain of credentials it accepts.

1. ``Authorization: Bearer <admin token>`` (``rga-...``): an admin (scripts). An API key
   (``sk-...``) is refused with 401 before anything is looked up: API keys are never accepted
   here, and admin tokens are never accepted as API keys (the key cache holds only API keys).
2. Else the console's session cookie (:func:`relaygate.accounts.sessions.verify_session`): an
   admin or a member (a member sees only its own account). A cookie-authenticated write needs
   the session's CSRF token in ``X-CSRF-Token``
   (:func:`relaygate.accounts.sessions.check_csrf`).
3. Anything else: 401.

The client's address (for the audit log and the sign-in throttle) and the cookie's name follow
the trusted proxy headers (:mod:`relaygate.admin.cookies`).
"""

from __future__ import annotations

from relaygate.accounts import sessions
from relaygate.accounts.principal import Principal
from relaygate.accounts.tokens import verify_admin_token
from relaygate.admin import cookies
from relaygate.api.http import Scope, header
from relaygate.errors import AuthenticationFailed
from relaygate.keys.tokens import KEY_PREFIX
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore

CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _bearer(raw: bytes) -> str:
    scheme, _, token = raw.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "Malformed Authorization header: expected 'Authorization: Bearer <admin token>'"
        )
    return token


async def authenticate(store: SqlStore, settings: Settings, scope: Scope) -> Principal:
    """The principal behind the request, or 401."""
    address = cookies.client_address(scope, settings)
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
    cookie = cookies.session_cookie_value(scope, settings)
    if cookie:
        principal = await sessions.verify_session(store, cookie, address)
        if principal is not None:
            return principal
        raise AuthenticationFailed("The session has expired or was signed out: sign in again")
    raise AuthenticationFailed(
        "The admin API needs 'Authorization: Bearer <admin token>' or a console session"
    )


def check_write(settings: Settings, scope: Scope, principal: Principal) -> None:
    """A cookie-authenticated write needs its session's CSRF token (403 otherwise)."""
    if principal.via != "session" or scope["method"] in SAFE_METHODS:
        return
    token = header(scope, CSRF_HEADER)
    sessions.check_csrf(
        cookies.session_cookie_value(scope, settings),
        principal,
        token.decode("latin-1") if token is not None else None,
    )
