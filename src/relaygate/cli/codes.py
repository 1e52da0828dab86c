"""``relaygate codes create|list``: redemption codes, each credited once to the account that
redeems it."""

from __future__ import annotations

from decimal import Decimal

import click

from relaygate.accounts import codes as business
from relaygate.accounts.accounts import usd_micros
from relaygate.admin.schemas import code_created_view, code_view
from relaygate.cli.accounts import as_json, run
from relaygate.cli.common import config_option, settings_or_exit, time_type, usd_type


@click.group()
def codes() -> None:
    """Create and list redemption codes."""


@codes.command("create")
@config_option
@click.option("--count", type=click.IntRange(1, business.MAX_CODES), default=1, show_default=True)
@click.option(
    "--amount", "amount", callback=usd_type, required=True, metavar="USD", help="Each code's worth."
)
@click.option("--expires-at", callback=time_type, default=None, metavar="ISO8601")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
def create(
    config: str | None, count: int, amount: Decimal, expires_at: int | None, json_out: bool
) -> None:
    """Create codes and print them once: they are stored only as hashes."""
    settings = settings_or_exit(config)
    micros = usd_micros(amount, "amount", zero=False)
    made = run(
        settings,
        lambda store, who: business.create_codes(
            store, who, count=count, amount_micros=micros, expires_at=expires_at
        ),
    )
    if json_out:
        click.echo(as_json([code_created_view(record, code) for record, code in made]))
        return
    click.echo(f"Created {count} codes worth ${amount} each. Shown once:")
    for _, code in made:
        click.echo(code)


@codes.command("list")
@config_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
def list_codes(config: str | None, limit: int, json_out: bool) -> None:
    """List codes (their prefixes, never the codes)."""
    settings = settings_or_exit(config)
    rows, _ = run(
        settings, lambda store, who: business.list_codes(store, who, after=None, limit=limit)
    )
    views = [code_view(c) for c in rows]
    if json_out:
        click.echo(as_json(views))
        return
    for v in views:
        state = f"redeemed by {v.account_id}" if v.redeemed_at else "unused"
        click.echo(f"{v.id}  {v.prefix}...  ${v.amount_usd}  {state}")
