"""``relaygate accounts create|list|show``: the accounts that own the money.

The CLI acts as the principal ``cli`` (an admin on the database's host); every change it makes
is in the audit log.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import click

from relaygate.accounts import accounts as business
from relaygate.accounts.principal import Principal
from relaygate.admin.schemas import account_view, encoder
from relaygate.cli.common import (
    announce_key_change,
    config_option,
    fail,
    settings_or_exit,
    usd_type,
    with_store,
)
from relaygate.errors import ApiError
from relaygate.settings import Settings
from relaygate.store.records import KeyRecord
from relaygate.store.sql import SqlStore

T = TypeVar("T")


def cli_principal() -> Principal:
    """The CLI: an admin, audited as ``cli`` from this host."""
    return Principal(via="cli", id="cli", role="admin", address=socket.gethostname()[:64])


def run(settings: Settings, work: Callable[[SqlStore, Principal], Awaitable[T]]) -> T:
    """Run a business function as the CLI; an API error becomes a one-line failure."""

    async def call(store: SqlStore) -> T:
        return await work(store, cli_principal())

    try:
        return with_store(settings, call)
    except ApiError as exc:
        fail(exc.message)
        raise  # unreachable


def as_json(value: Any) -> str:
    """A view (msgspec struct, or a list of them) as one line of JSON."""
    return encoder.encode(value).decode()


@click.group(short_help="Create, list and show accounts.")
def accounts() -> None:
    """Create, list and show accounts (each holds one balance for its keys)."""


@accounts.command("create")
@config_option
@click.option("--name", required=True, help="The account's name (at most 200 characters).")
@click.option(
    "--credits",
    "credits_usd",
    callback=usd_type,
    default=None,
    metavar="USD",
    help="Initial credits in USD (default 0).",
)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def create(config: str | None, name: str, credits_usd: Decimal | None, json_out: bool) -> None:
    """Create an account."""
    settings = settings_or_exit(config)
    micros = 0 if credits_usd is None else business.usd_micros(credits_usd, "credits")
    account = run(
        settings,
        lambda store, who: business.create_account(store, who, name=name, credits_micros=micros),
    )
    announce_key_change(settings, account.id)
    view = account_view(account)
    if json_out:
        click.echo(as_json(view))
    else:
        click.echo(f"Created {account.id} ({account.name}) with ${view.granted_usd}")


@accounts.command("list")
@config_option
@click.option("--q", "q", default=None, help="Only accounts whose name contains this (or id).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
def list_accounts(config: str | None, q: str | None, limit: int, json_out: bool) -> None:
    """List accounts, newest first."""
    settings = settings_or_exit(config)
    rows, _ = run(
        settings,
        lambda store, who: business.list_accounts(store, who, q=q, after=None, limit=limit),
    )
    views = [account_view(a) for a in rows]
    if json_out:
        click.echo(as_json(views))
        return
    for v in views:
        balance = "unlimited" if v.balance_usd is None else f"${v.balance_usd}"
        click.echo(f"{v.id}  {v.status:9}  {balance:>16}  used ${v.used_usd}  {v.name}")


@accounts.command("show")
@config_option
@click.argument("account_id")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def show(config: str | None, account_id: str, json_out: bool) -> None:
    """Show one account."""
    settings = settings_or_exit(config)
    account = run(settings, lambda store, who: business.get_account(store, who, account_id))
    view = account_view(account)
    if json_out:
        click.echo(as_json(view))
        return
    for name, value in json.loads(as_json(view)).items():
        click.echo(f"{name:16} {value if isinstance(value, str) else json.dumps(value)}")


def create_key_under(
    settings: Settings,
    account_id: str,
    fields: dict[str, Any],
    credits_usd: Decimal | None,
    unlimited: bool,
) -> tuple[KeyRecord, str]:
    """``keys create --account ID``: a key spending from an existing account."""
    from relaygate.accounts import keys as key_business

    if credits_usd is not None or unlimited:
        fail(
            "--credits and --unlimited are for a key's own new account; credits belong to the"
            f" account: relaygate credits add {account_id} USD"
        )
    models = fields.pop("models")
    if models is not None:
        fields["models"] = [m.strip() for m in models.split(",") if m.strip()]
    given = {k: v for k, v in fields.items() if v is not None}
    created = run(
        settings,
        lambda store, who: key_business.create_key(
            store,
            who,
            account_id,
            given,
            known_models=set(settings.models),
            max_keys=settings.max_keys_per_account,
        ),
    )
    announce_key_change(settings, created[0].id)
    return created
