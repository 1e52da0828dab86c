"""Signing in and out, the first-run setup link, and the language switcher."""

from __future__ import annotations

from relaygate.accounts import audit, sessions, setup
from relaygate.admin import cookies
from relaygate.console import i18n
from relaygate.console.render import render
from relaygate.console.web import PREFIX, Page, Request, redirect
from relaygate.errors import ApiError, AuthenticationFailed, InvalidRequest, NotFound

SETUP_PATH = f"{PREFIX}/setup"


def setup_url(base: str, token: str) -> str:
    """The setup link ``relaygate serve`` prints."""
    return f"{base.rstrip('/')}{SETUP_PATH}/{token}"


async def home(request: Request) -> Page:
    principal = request.principal
    if principal is None:
        return redirect(f"{PREFIX}/sign-in")
    return redirect(f"{PREFIX}/accounts" if principal.role == "admin" else f"{PREFIX}/overview")


async def sign_in_form(request: Request) -> Page:
    if request.principal is not None:
        return await home(request)
    return render(request, "sign_in.html", email="", error=None, next=request.next_path())


async def sign_in(request: Request) -> Page:
    gw, scope = request.gw, request.scope
    address = cookies.client_address(scope, gw.settings)
    email = request.field("email")
    try:
        session, cookie = await sessions.sign_in(
            gw.store, gw.settings, email, request.form.get("password", ""), address
        )
        principal = await sessions.verify_session(gw.store, cookie, address)
        if principal is None:
            raise AuthenticationFailed(sessions.SIGN_IN_FAILED)
    except ApiError as exc:
        page = render(
            request, "sign_in.html", exc.status, email=email, error=str(exc),
            next=request.next_path(),
        )  # fmt: skip
        page.headers.extend(exc.headers())
        return page
    await audit.record(
        gw.store, principal, "session.sign_in", "user", principal.id,
        {"session": session.id, "via": "console"}, account_id=principal.account_id,
    )  # fmt: skip
    page = redirect(request.next_path())
    page.headers.append(cookies.session_cookie(scope, gw.settings, cookie))
    return page


async def sign_out(request: Request) -> Page:
    gw, principal = request.gw, request.user
    if await sessions.sign_out(gw.store, request.cookie):
        await audit.record(
            gw.store, principal, "session.sign_out", "user", principal.id,
            {"session": principal.session_id, "via": "console"}, account_id=principal.account_id,
        )  # fmt: skip
    page = redirect(f"{PREFIX}/sign-in")
    page.headers.append(cookies.clear_session_cookie(request.scope, gw.settings))
    return page


async def setup_form(request: Request) -> Page:
    token = request.params["token"]
    if not await setup.link_is_live(request.gw.store, token):
        raise NotFound(setup.LINK_GONE)
    return render(request, "setup.html", token=token, email="", error=None)


async def complete_setup(request: Request) -> Page:
    token, email = request.params["token"], request.field("email")
    gw = request.gw
    password = request.form.get("password", "")
    try:
        if password != request.form.get("password_again", ""):
            raise InvalidRequest("The two passwords differ", param="password")
        await setup.complete_setup(gw.store, gw.settings, token, email, password)
    except NotFound:
        raise
    except ApiError as exc:
        return render(request, "setup.html", exc.status, token=token, email=email, error=str(exc))
    return redirect(f"{PREFIX}/sign-in?created=1")


async def language(request: Request) -> Page:
    """The switcher: remember the language in a cookie, back to the page it was chosen on."""
    chosen = request.field("language")
    if chosen not in i18n.LANGUAGES:
        chosen = i18n.DEFAULT
    page = redirect(request.next_path())
    value = f"{i18n.COOKIE}={chosen}; Path={PREFIX}; Max-Age=31536000; SameSite=Lax"
    page.headers.append((b"set-cookie", value.encode()))
    return page
