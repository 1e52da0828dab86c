"""``relaygate credits add ACCOUNT_ID USD``."""

from __future__ import annotations

from decimal import Decimal

import click

from relaygate.accounting.prices import micros_to_usd, usd_to_micros
from relaygate.accounts import audit
from relaygate.accounts import credits as business
from relaygate.accounts.accounts import usd_micros
from relaygate.admin.schemas import grant_view
from relaygate.cli.accounts import as_json, cli_principal, run
from relaygate.cli.common import (
    announce_key_change,
    config_option,
    fail,
    parse_usd,
    settings_or_exit,
    with_store,
)
from relaygate.store import admin_sql
from relaygate.store.records import AccountRecord
from relaygate.store.sql import SqlStore


@click.group()
def credits() -> None:
    """Manage accounts' credits."""


@credits.command(
    "add",
    context_settings={"ignore_unknown_options": True},
    short_help="Add USD credits to an account.",
)
@config_option
@click.argument("account_id")
@click.argument("usd")
@click.option("--note", default=None, help="Why (kept with the grant and in the audit log).")
@click.option(
    "--idempotency-key",
    default=None,
    help="Run again with the same key: the credits are added once.",
)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def add(
    config: str | None,
    account_id: str,
    usd: str,
    note: str | None,
    idempotency_key: str | None,
    json_out: bool,
) -> None:
    """Add USD credits to an account (applies to running gateways within a second).

    Given a key id (key_...), it says so and adds them to the key's account."""
    amount: Decimal = parse_usd(usd)
    settings = settings_or_exit(config)

    async def exists(store: SqlStore) -> bool:
        return await admin_sql.get_account(store, account_id) is not None

    if not with_store(settings, exists):
        _add_to_key(config, account_id, amount)
        return
    grant, replayed = run(
        settings,
        lambda store, who: business.add_credits(
            store,
            who,
            account_id,
            usd_micros(amount, "USD", zero=False),
            note=note,
            idempotency_key=idempotency_key,
        ),
    )
    if not replayed:
        announce_key_change(settings, account_id)
    view = grant_view(grant)
    if json_out:
        click.echo(as_json(view))
    else:
        again = " (already added with this idempotency key: nothing more added)" if replayed else ""
        click.echo(f"Added ${view.amount_usd} to {account_id}: ${view.balance_usd} left{again}")


def _add_to_key(config: str | None, key_id: str, amount: Decimal) -> None:
    """The command as it was: a key id's credits (they go to the key's account)."""
    settings = settings_or_exit(config)
    micros = usd_to_micros(amount)

    async def work(store: SqlStore) -> AccountRecord | None:
        record = await store.add_credits(key_id, micros)
        account = None if record is None else await store.get_account(record.account_id)
        if account is not None:
            await audit.record(
                store,
                cli_principal(),
                "credits.add",
                "account",
                account.id,
                {"amount_usd": str(micros_to_usd(micros)), "key": key_id},
                account_id=account.id,
            )
        return account

    account = with_store(settings, work)
    if account is None:
        fail(f"no account or key with id {key_id}")
        return
    click.echo(
        f"note: {key_id} is a key id, not an account id: credits belong to accounts"
        " (relaygate credits add ACCOUNT_ID USD); key ids are still accepted",
        err=True,
    )
    announce_key_change(settings, key_id)
    remaining = micros_to_usd(account.granted_micros - account.used_micros)
    click.echo(f"Added ${amount} to {key_id} (account {account.id}): ${remaining} remaining")
