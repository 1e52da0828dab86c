"""``relaygate users create|list|disable|set-password``: the people who sign in to the console.

Passwords are read from standard input: a prompt without echo (asked twice) on a terminal, one
line from a pipe (``printf '%s\\n' "$PASSWORD" | relaygate users create ...``). Never from an
argument, which other users of the host could read in the process list.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from relaygate.accounts import audit
from relaygate.accounts.passwords import MAX_PASSWORD_BYTES
from relaygate.accounts.users import (
    ROLES,
    create_user,
    disable_user,
    list_users,
    set_password,
    user_view,
)
from relaygate.cli.accounts import cli_principal
from relaygate.cli.common import config_option, fail, settings_or_exit, with_store
from relaygate.errors import ApiError
from relaygate.settings import Settings
from relaygate.store.identity_sql import UserRecord
from relaygate.store.sql import SqlStore

T = TypeVar("T")


def read_password() -> str:
    """The new password: prompted without echo on a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    line = sys.stdin.readline(MAX_PASSWORD_BYTES * 4 + 2)
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        fail("no password on standard input (one line is read from a pipe)")
    return password


def _run(settings: Settings, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    """``work`` on the store; an :class:`ApiError` (bad input) is one line and exit code 2."""
    try:
        return with_store(settings, work)
    except ApiError as exc:
        fail(exc.message)
        raise  # unreachable


@click.group(short_help="Create, list and disable console users.")
def users() -> None:
    """Create, list and disable the people who sign in to the console."""


@users.command("create", short_help="Create a user (password from standard input).")
@config_option
@click.option("--email", required=True, help="The address the user signs in with.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="admin: the operator, every account; member: one account's owner.",
)
@click.option("--account", "account_id", default=None, help="A member's account (its id).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create(
    config: str | None, email: str, role: str, account_id: str | None, as_json: bool
) -> None:
    """Create a user; the password is read from standard input (never an argument)."""
    settings = settings_or_exit(config)
    if role == "member" and account_id is None:
        fail("a member belongs to one account: give --account ACCOUNT_ID")
    if role == "admin" and account_id is not None:
        fail("an admin sees every account and belongs to none: leave out --account")
    password = read_password()

    async def work(store: SqlStore) -> UserRecord:
        user = await create_user(store, email, password, role, account_id, settings=settings)
        await audit.record(
            store,
            cli_principal(),
            "user.create",
            "user",
            user.id,
            {"email": user.email, "role": user.role},
            account_id=account_id,
        )
        return user

    user = _run(settings, work)
    if as_json:
        click.echo(json.dumps(user_view(user)))
    else:
        where = f" of {user.account_id}" if user.account_id else ""
        click.echo(f"Created {user.id}: {user.email}, {user.role}{where}")


@users.command("list")
@config_option
@click.option("--account", "account_id", default=None, help="Only this account's users.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_(config: str | None, account_id: str | None, as_json: bool) -> None:
    """List users (never their password hashes)."""
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> list[UserRecord]:
        found: list[UserRecord] = []
        after: str | None = None
        while page := await list_users(store, account_id=account_id, limit=1000, after=after):
            found.extend(page)
            after = page[-1].id
        return found

    records = _run(settings, work)
    views = [user_view(user) for user in records]
    if as_json:
        click.echo(json.dumps(views))
        return
    for v in views:
        state = "disabled" if v["disabled_at"] else "active"
        click.echo(f"{v['id']}  {v['role']:6}  {state:8}  {v['email']}  {v['account_id'] or ''}")


@users.command("disable", short_help="Disable a user and end their sessions.")
@config_option
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def disable(config: str | None, user_id: str, as_json: bool) -> None:
    """Disable a user: no more sign-ins, and their sessions end at once."""
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> UserRecord:
        user = await disable_user(store, user_id)
        await audit.record(
            store, cli_principal(), "user.disable", "user", user.id, {}, account_id=user.account_id
        )
        return user

    user = _run(settings, work)
    click.echo(json.dumps(user_view(user)) if as_json else f"Disabled {user.id}")


@users.command("set-password", short_help="Set a new password (from standard input).")
@config_option
@click.argument("user_id")
def set_password_(config: str | None, user_id: str) -> None:
    """Give a user a new password (from standard input); their sessions end."""
    settings = settings_or_exit(config)
    password = read_password()

    async def work(store: SqlStore) -> None:
        await set_password(store, user_id, password, settings=settings)
        await audit.record(store, cli_principal(), "user.set_password", "user", user_id, {})

    _run(settings, work)
    click.echo(f"Changed the password of {user_id}; their sessions have ended")
