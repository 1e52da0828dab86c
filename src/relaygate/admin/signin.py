"""Console sessions on the admin API: sign in, who am I, sign out.

``POST /admin/v1/session`` takes an email and a password and sets the session cookie
(HttpOnly, SameSite=Lax, ``Secure`` and ``__Host-`` over HTTPS); its answer carries the
session's CSRF token, which every cookie-authenticated write sends back in ``X-CSRF-Token``.
``GET /admin/v1/session`` answers the same for a live session (a page that lost the token asks
again); ``DELETE /admin/v1/session`` ends it and clears the cookie.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from msgspec import Meta, Struct

from relaygate.accounts import audit, sessions, users
from relaygate.accounts.passwords import MAX_PASSWORD_BYTES
from relaygate.accounts.principal import Principal
from relaygate.admin import cookies
from relaygate.admin.routes import Call, Reply
from relaygate.errors import AuthenticationFailed

MAX_EMAIL_CHARS = 320


class SignIn(Struct, forbid_unknown_fields=True, kw_only=True):
    email: Annotated[str, Meta(max_length=MAX_EMAIL_CHARS)]
    password: Annotated[str, Meta(max_length=MAX_PASSWORD_BYTES)]


class Session(Struct, kw_only=True):
    """The signed-in user and the session's CSRF token (send it as ``X-CSRF-Token``)."""

    object: str = "session"
    user_id: str
    email: str
    role: str
    account_id: str | None
    csrf_token: str
    expires_at: str | None = None


class SignedOut(Struct, kw_only=True):
    object: str = "session"
    signed_out: bool


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def _view(call: Call, principal: Principal, cookie: str, expires_at: int | None) -> Session:
    user = await users.get_user(call.gw.store, principal.id)
    return Session(
        user_id=user.id,
        email=user.email,
        role=principal.role,
        account_id=principal.account_id,
        csrf_token=sessions.csrf_token(cookie),
        expires_at=_iso(expires_at) if expires_at is not None else None,
    )


async def sign_in(call: Call) -> Reply:
    body: SignIn = call.body
    gw, scope = call.gw, call.scope
    address = cookies.client_address(scope, gw.settings)
    session, cookie = await sessions.sign_in(
        gw.store, gw.settings, body.email, body.password, address
    )
    principal = await sessions.verify_session(gw.store, cookie, address)
    if principal is None:  # ended between two statements (the user disabled meanwhile)
        raise AuthenticationFailed(sessions.SIGN_IN_FAILED)
    await audit.record(
        gw.store,
        principal,
        "session.sign_in",
        "user",
        principal.id,
        {"session": session.id},
        account_id=principal.account_id,
    )
    view = await _view(call, principal, cookie, session.expires_at)
    return Reply(view, 201, [cookies.session_cookie(scope, gw.settings, cookie)])


def _cookie(call: Call) -> str:
    cookie = cookies.session_cookie_value(call.scope, call.gw.settings)
    if call.principal.via != "session" or cookie is None:
        raise AuthenticationFailed("This route is for console sessions: sign in first")
    return cookie


async def current(call: Call) -> Reply:
    return Reply(await _view(call, call.principal, _cookie(call), None))


async def sign_out(call: Call) -> Reply:
    cookie = _cookie(call)
    ended = await sessions.sign_out(call.gw.store, cookie)
    if ended:
        await audit.record(
            call.gw.store,
            call.principal,
            "session.sign_out",
            "user",
            call.principal.id,
            {"session": call.principal.session_id},
            account_id=call.principal.account_id,
        )
    clear = cookies.clear_session_cookie(call.scope, call.gw.settings)
    return Reply(SignedOut(signed_out=ended), 200, [clear])
