"""``relaygate serve``."""

from __future__ import annotations

import click
import uvicorn

from relaygate.app import create_app
from relaygate.cli.common import config_option, fail, settings_or_exit
from relaygate.errors import ConfigError
from relaygate.logs import configure_logging
from relaygate.store.sql import SqlStore


@click.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes."
)
def serve(config: str | None, host: str, port: int, workers: int) -> None:
    """Serve the OpenAI-compatible API."""
    settings = settings_or_exit(config)
    secrets = [u.api_key for m in settings.models.values() for u in m.upstreams if u.api_key]
    configure_logging(settings.log_level, secrets)
    if workers > 1:
        fail("--workers > 1 needs shared limits and credits (redis_url); not available yet")
    try:
        app = create_app(settings, config or "(built-in defaults)")
    except ConfigError as exc:
        fail(f"config error: {exc}")
        return
    store = SqlStore(settings.database_url).describe()
    click.echo(
        f"relaygate: serving http://{host}:{port} with store {store}, limiter in-process,"
        f" models: {', '.join(settings.models) or 'none'}",
        err=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
    )
