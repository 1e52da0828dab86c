"""What every command shares: the --config option, loading settings, opening the store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from relaygate.errors import ConfigError
from relaygate.settings import Settings, load_settings
from relaygate.store.sql import SqlStore

T = TypeVar("T")

_CONFIG_META = "relaygate.config"


def _remember_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``relaygate --config FILE COMMAND``: the file, for the command's own option."""
    ctx.meta[_CONFIG_META] = value


def _config_or_global(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The command's ``--config``, else the one given before the command."""
    if value is None and param.name is not None:
        value = ctx.meta.get(_CONFIG_META)
    return value


global_config_option = click.option(
    "--config",
    envvar="RELAYGATE_CONFIG",
    default=None,
    metavar="FILE",
    expose_value=False,
    is_eager=True,
    callback=_remember_config,
    help="YAML (or JSON) config file for the command (also accepted after it).",
)

config_option = click.option(
    "--config",
    "config",
    envvar="RELAYGATE_CONFIG",
    default=None,
    metavar="FILE",
    callback=_config_or_global,
    help="YAML (or JSON) config file; also read from RELAYGATE_CONFIG.",
)


def fail(message: str) -> None:
    click.echo(f"relaygate: {message}", err=True)
    sys.exit(2)


def settings_or_exit(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        fail(f"config error: {exc}")
        raise  # unreachable


def store_label(database_url: str) -> str:
    """The store as a command names it: a SQLite file's absolute path, or a PostgreSQL URL
    without its password."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return f"sqlite {database or ':memory:'}"
        return f"sqlite {Path(database).resolve()}"
    return "postgresql " + url._replace(password=None).render_as_string(hide_password=False)


def _sqlite_file_exists(database_url: str) -> bool:
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return True  # nothing on disk to look for
    return Path(database).exists()


def store_would_be_created(settings: Settings) -> bool:
    """Whether opening the store creates a new database (see :func:`store_is_new`)."""

    async def check() -> bool:
        store = SqlStore(settings.database_url)
        try:
            return await store_is_new(store)
        finally:
            await store.close()

    return asyncio.run(check())


async def store_is_new(store: SqlStore) -> bool:
    """Whether ``store`` holds no relaygate schema yet (a SQLite file that does not exist, or
    a database without relaygate's migrations table); opening it would create one."""
    if store.dialect == "sqlite" and not _sqlite_file_exists(store.database_url):
        return True  # checked without opening it: SQLite would create the file
    async with store.engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).has_table("schema_migrations"))
    return not found


def bold(text: str) -> str:
    return click.style(text, bold=True)


class _NoStore(Exception):
    """The command would create a new database, and was not asked to."""


async def open_store(settings: Settings, *, create: bool) -> SqlStore:
    """The store, named on stderr (standard output stays the command's: ``--json``).

    A store that does not exist yet is created only with ``create`` (``db upgrade`` and
    ``serve``), and said so in bold; any other command refuses it, in bold: a key created in
    a stray new database is one no running gateway knows."""
    label = store_label(settings.database_url)
    context = click.get_current_context(silent=True)
    named = context.meta.setdefault("relaygate.stores", set()) if context else set()
    if label not in named:  # once per command, however many times it opens the store
        named.add(label)
        click.echo(f"relaygate: store {label}", err=True)
    store = SqlStore(settings.database_url)
    try:
        new = await store_is_new(store)
    except Exception:
        await store.close()
        raise
    if new and not create:
        await store.close()
        raise _NoStore(label)
    if new:
        click.echo(bold(f"relaygate: creating a new database: {label}"), err=True)
    return store


def refuse_new_store(label: str) -> None:
    fail(
        bold(
            f"there is no relaygate database at {label}: this command would create a new,"
            " empty one, which no running gateway uses. Point --config (or RELAYGATE_CONFIG,"
            " RELAYGATE_DATABASE_URL) at the gateway's store, or create this one on purpose"
            " with: relaygate db upgrade"
        )
    )


def with_store(settings: Settings, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    """Run ``work`` on the store (schema brought up to date); a command's only way to it."""

    async def run() -> T:
        store = await open_store(settings, create=False)
        try:
            await store.upgrade()
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except _NoStore as exc:
        refuse_new_store(str(exc))
        raise  # unreachable


def announce_key_change(settings: Settings, key_id: str) -> None:
    """Tell every running replica at once (they also poll the store, so this only speeds it up)."""
    if settings.redis_url is None:
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.publish(f"{settings.redis_key_prefix}:keys", key_id)
    except redis.RedisError as exc:
        click.echo(
            f"relaygate: note: could not notify replicas through Redis ({exc});"
            " they will pick the change up from the store",
            err=True,
        )
    finally:
        client.close()


def parse_usd(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter("the amount must be zero or more")
    if amount != amount.quantize(Decimal("0.000001")):
        raise click.BadParameter("the amount must not be finer than a micro-dollar (6 places)")
    return amount


def usd_type(ctx: Any, param: Any, value: str | None) -> Decimal | None:
    return None if value is None else parse_usd(value)


def time_type(ctx: Any, param: Any, value: str | None) -> int | None:
    """An ISO 8601 date-time option (``--expires-at``) as Unix seconds; UTC unless it says."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value[:64]!r} is not an ISO 8601 date-time (e.g. 2027-01-31T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
