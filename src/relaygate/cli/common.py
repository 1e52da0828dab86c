"""What every command shares: the --config option, loading settings, opening the store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

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


def with_store(settings: Settings, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = SqlStore(settings.database_url)
        try:
            await store.upgrade()
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


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
