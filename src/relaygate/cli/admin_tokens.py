"""``relaygate admin-token create|list|revoke``: credentials for scripts on the admin API."""

from __future__ import annotations

import json

import click

from relaygate.accounts import tokens as business
from relaygate.cli.accounts import run
from relaygate.cli.common import config_option, settings_or_exit
from relaygate.store.admin_sql import AdminTokenRecord


def _view(record: AdminTokenRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


@click.group("admin-token", short_help="Create, list and revoke admin tokens.")
def admin_token() -> None:
    """Create, list and revoke admin tokens (Authorization: Bearer rga-... on /admin/v1)."""


@admin_token.command("create", short_help="Create an admin token and print it once.")
@config_option
@click.option("--name", required=True, help="What the token is for (at most 200 characters).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def create(config: str | None, name: str, json_out: bool) -> None:
    """Create an admin token and print it once: it is stored only as a hash."""
    settings = settings_or_exit(config)
    record, token = run(settings, lambda store, who: business.create_admin_token(store, who, name))
    if json_out:
        click.echo(json.dumps({**_view(record), "token": token}))
    else:
        click.echo(f"Created admin token {record.id} ({record.name}). The token, shown once:")
        click.echo(token)


@admin_token.command("list")
@config_option
@click.option("--json", "json_out", is_flag=True, help="Print a JSON array.")
def list_tokens(config: str | None, json_out: bool) -> None:
    """List admin tokens (their prefixes, never the tokens)."""
    settings = settings_or_exit(config)
    records = run(settings, business.list_admin_tokens)
    if json_out:
        click.echo(json.dumps([_view(r) for r in records]))
        return
    for r in records:
        state = "revoked" if r.revoked_at else "active"
        click.echo(f"{r.id}  {r.prefix}...  {state:8}  {r.name}")


@admin_token.command("revoke", short_help="Revoke an admin token.")
@config_option
@click.argument("token_id")
def revoke(config: str | None, token_id: str) -> None:
    """Revoke an admin token: the admin API refuses it from the next request on."""
    settings = settings_or_exit(config)
    run(settings, lambda store, who: business.revoke_admin_token(store, who, token_id))
    click.echo(f"Revoked {token_id}")
