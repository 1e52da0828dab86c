"""``relaygate keys create|list|revoke``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import click

from relaygate.accounting.gate import Balance
from relaygate.accounting.prices import micros_to_usd, usd_to_micros
from relaygate.cli.common import (
    announce_key_change,
    config_option,
    fail,
    settings_or_exit,
    time_type,
    usd_type,
    with_store,
)
from relaygate.keys.tokens import display_prefix, hash_key, new_key, new_key_id
from relaygate.store.periods import period_start
from relaygate.store.records import AccountRecord, KeyRecord
from relaygate.store.sql import SqlStore


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def remaining_micros(record: KeyRecord, account: AccountRecord | None, now: float) -> int | None:
    """What the key can still spend, as the store has it: the smaller of its account's balance
    and what is left of its spend cap this period (``None``: unlimited)."""
    cap = None
    if record.spend_limit_micros is not None:
        start = period_start(record.spend_limit_period, now)
        used = record.period_used_micros if record.period_start == start else 0
        cap = record.spend_limit_micros - used
    if account is None:
        account = AccountRecord(id="", name="", created_at=0)  # a key without one spends nothing
    balance = Balance(account.granted_micros, account.used_micros, account.unlimited, cap)
    return None if balance.is_unlimited else balance.remaining


def key_view(record: KeyRecord, remaining: int | None = None) -> dict[str, object]:
    """A key as the CLI shows it (never the key itself, which is not stored). ``remaining``
    (micro-USD, ``None`` for unlimited) is what it can still spend, when known."""
    return {
        "id": record.id,
        "account_id": record.account_id,
        "name": record.name,
        "prefix": record.prefix,
        "models": list(record.models) if record.models is not None else None,
        "credits": str(micros_to_usd(record.granted_micros)),
        "remaining": None if remaining is None else str(micros_to_usd(remaining)),
        "used": str(micros_to_usd(record.used_micros)),
        "unlimited": record.unlimited,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "max_concurrency": record.max_concurrency,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
    }


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@config_option
@click.option("--name", default="", help="A label for the key.")
@click.option(
    "--credits",
    "credits_usd",
    callback=usd_type,
    default=None,
    metavar="USD",
    help="Credits in USD (default 0).",
)
@click.option("--unlimited", is_flag=True, help="No credit limit (usage is still recorded).")
@click.option(
    "--models", default=None, metavar="a,b", help="Models the key may use (default: every model)."
)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=None, help="Concurrent requests."
)
@click.option(
    "--expires-at",
    "expires_at",
    default=None,
    callback=time_type,
    metavar="ISO8601",
    help="When the key stops working.",
)
@click.option(
    "--account",
    "account_id",
    default=None,
    metavar="ID",
    help="The account the key spends from (default: a new account of its own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create(
    config: str | None,
    name: str,
    credits_usd: Decimal | None,
    unlimited: bool,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    expires_at: int | None,
    account_id: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it once: it is stored only as a hash. The key gets an account
    of its own holding its credits."""
    settings = settings_or_exit(config)
    if account_id is not None:
        from relaygate.cli.accounts import create_key_under

        fields = {"name": name, "models": models, "rpm": rpm, "tpm": tpm}
        fields |= {"max_concurrency": concurrency, "expires_at": expires_at}
        created, key = create_key_under(settings, account_id, fields, credits_usd, unlimited)
        click.echo(json.dumps({**key_view(created), "key": key}) if as_json else key)
        return
    model_list = None
    if models is not None:
        model_list = tuple(m.strip() for m in models.split(",") if m.strip())
        unknown = [m for m in model_list if m not in settings.models]
        if unknown:
            fail(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(settings.models)})")
    key = new_key()
    record = KeyRecord(
        id=new_key_id(),
        name=name,
        key_hash=hash_key(key),
        prefix=display_prefix(key),
        created_at=int(time.time()),
        granted_micros=usd_to_micros(credits_usd or Decimal(0)),
        unlimited=unlimited,
        models=model_list,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=concurrency,
        expires_at=expires_at,
    )

    async def work(store: SqlStore) -> KeyRecord:
        return await store.create_key(record)

    created = with_store(settings, work)
    announce_key_change(settings, created.id)
    if as_json:
        click.echo(json.dumps({**key_view(created), "key": key}))
    else:
        click.echo(f"Created {created.id} ({created.name or 'unnamed'}). The key, shown once:")
        click.echo(key)


@keys.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_keys(config: str | None, as_json: bool) -> None:
    """List keys (their prefixes, never the keys)."""
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> list[dict[str, object]]:
        records = await store.list_keys()
        accounts = {a: await store.get_account(a) for a in {r.account_id for r in records}}
        now = time.time()
        return [key_view(r, remaining_micros(r, accounts[r.account_id], now)) for r in records]

    views = with_store(settings, work)
    if as_json:
        click.echo(json.dumps(views))
        return
    click.echo(f"{'id':26} {'prefix':14} {'state':8} {'remaining USD':>14} {'used USD':>12}  name")
    for v in views:
        state = "revoked" if v["revoked_at"] else "active"
        left = "unlimited" if v["remaining"] is None else v["remaining"]
        click.echo(
            f"{v['id']:26} {str(v['prefix']) + '...':14} {state:8} {left:>14}"
            f" {v['used']:>12}  {v['name']}"
        )


@keys.command("revoke")
@config_option
@click.argument("key_id")
def revoke(config: str | None, key_id: str) -> None:
    """Revoke a key: it stops working within a second."""
    settings = settings_or_exit(config)

    async def work(store: SqlStore) -> tuple[KeyRecord | None, KeyRecord | None]:
        before = await store.get_key(key_id)
        if before is None or before.revoked_at is not None:
            return before, None
        return before, await store.revoke_key(key_id, int(time.time()))

    before, record = with_store(settings, work)
    if before is None:
        fail(f"no key with id {key_id}")
        return
    if record is None:
        click.echo(f"{key_id} was already revoked (at {_iso(before.revoked_at)}): nothing changed")
        return
    announce_key_change(settings, key_id)
    click.echo(f"Revoked {key_id}")
