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


@click.group()
def credits() -> None:
    """Manage a key's credits."""


@credits.command("add", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("key_id")
@click.argument("usd")
def add(config: str | None, key_id: str, usd: str) -> None:
    """Add USD credits to a key (applies to a running gateway within a second)."""
    amount: Decimal = parse_usd(usd)
    settings = settings_or_exit(config)
    record = with_store(settings, lambda store: store.add_credits(key_id, usd_to_micros(amount)))
    if record is None:
        fail(f"no key with id {key_id}")
        return
    announce_key_change(settings, key_id)
    remaining = micros_to_usd(record.granted_micros - record.used_micros)
    click.echo(f"Added ${amount} to {key_id}: ${remaining} remaining")
