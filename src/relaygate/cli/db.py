"""``relaygate db upgrade``."""

from __future__ import annotations

import click

from relaygate.cli.common import config_option, open_store, settings_or_exit


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
def upgrade(config: str | None) -> None:
    """Apply pending schema migrations."""
    import asyncio

    settings = settings_or_exit(config)

    async def run() -> list[str]:
        store = await open_store(settings, create=True)
        try:
            return await store.upgrade()
        finally:
            await store.close()

    applied = asyncio.run(run())
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")
