"""``relaygate credits add``."""

from __future__ import annotations

from decimal import Decimal

import click

from relaygate.accounting.prices import micros_to_usd, usd_to_micros
from relaygate.cli.common import (
    announce_key_change,
    config_option,
    fail,
    parse_usd,
    settings_or_exit,
    with_store,
)
from relaygate.store.records import AccountRecord
from relaygate.store.sql import SqlStore


@click.group()
def credits() -> None:
    """Manage a key's credits."""


@credits.command("add", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("key_id")
@click.argument("usd")
def add(config: str | None, key_id: str, usd: str) -> None:
    """Add USD credits to a key's account (applies to a running gateway within a second)."""
    amount: Decimal = parse_usd(usd)
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> AccountRecord | None:
        record = await store.add_credits(key_id, usd_to_micros(amount))
        return None if record is None else await store.get_account(record.account_id)

    account = with_store(settings, work)
    if account is None:
        fail(f"no key with id {key_id}")
        return
    announce_key_change(settings, key_id)
    remaining = micros_to_usd(account.granted_micros - account.used_micros)
    click.echo(f"Added ${amount} to {key_id} (account {account.id}): ${remaining} remaining")
