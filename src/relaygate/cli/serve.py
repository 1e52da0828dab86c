"""``relaygate serve``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import resource
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator

import click
import msgspec
import uvicorn
from uvicorn.supervisors import Multiprocess

from relaygate.accounts import setup
from relaygate.app import App, create_app
from relaygate.cli.common import (
    bold,
    config_option,
    fail,
    settings_or_exit,
    store_label,
    store_would_be_created,
)
from relaygate.console.signin import setup_url
from relaygate.errors import ConfigError
from relaygate.logs import configure_logging
from relaygate.metrics import MULTIPROCESS_DIR
from relaygate.redaction import configured_secrets
from relaygate.serving import HttpProtocol, Limits
from relaygate.settings import Settings, load_settings, unserved_models
from relaygate.store.sql import SqlStore

_SOURCE = "RELAYGATE_SOURCE_LABEL"
_SPARE_FILES = 64
"""Open files kept for the store, logs, Redis and the like, beside client connections."""
log = logging.getLogger("relaygate")


def connection_room(wanted: int) -> int:
    """Client connections the open-file limit allows: each may hold an upstream connection
    too. The soft limit is raised towards the hard one first, as far as ``wanted`` needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * wanted + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - _SPARE_FILES) // 2))


def protocol_limits(settings: Settings) -> Limits:
    """The connection limits of the HTTP protocol, from the settings."""
    connections = connection_room(settings.max_connections)
    if connections < settings.max_connections:
        log.warning(
            "max_connections is %d: the open-file limit leaves room for no more"
            " (raise it with ulimit -n)",
            connections,
        )
    return Limits(
        max_head_bytes=settings.max_head_bytes,
        head_timeout=settings.head_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        send_timeout=settings.send_timeout_seconds,
        max_connections=connections,
    )


def public_url(settings: Settings, host: str, port: int) -> Settings:
    """``settings`` with ``public_url`` set: as configured, else the address served."""
    if settings.public_url is not None:
        return settings
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    return msgspec.structs.replace(settings, public_url=f"http://{shown}:{port}")


async def _open_setup(settings: Settings) -> str | None:
    store = SqlStore(settings.database_url)
    try:
        await store.upgrade()
        return await setup.open_setup(store)
    finally:
        await store.close()


def announce_setup(settings: Settings) -> None:
    """While no admin exists, print the console's one-time setup link."""
    if not settings.console or settings.public_url is None:
        return
    try:
        token = asyncio.run(_open_setup(settings))
    except Exception as exc:  # the start itself reports a store it cannot reach
        log.warning("could not check for a console admin: %s", exc)
        return
    if token is not None:
        minutes = setup.SETUP_SECONDS // 60
        click.echo(
            f"relaygate: no admin yet. Create the first one within {minutes} minutes at"
            f" (works once): {setup_url(settings.public_url, token)}",
            err=True,
        )


def _prepare(settings: Settings, source: str) -> App:
    configure_logging(
        settings.log_level,
        configured_secrets(settings),
        settings.log_debug_loggers,
        log_format=settings.log_format,
        request_log=settings.request_log,
    )
    return create_app(settings, source)


def worker_app() -> App:
    """The app of one ``--workers`` process (uvicorn imports it by name in each worker)."""
    settings = load_settings()
    return _prepare(settings, os.environ.get(_SOURCE, "(built-in defaults)"))


@click.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (more than one needs redis_url: limits and credits are shared).",
)
def serve(config: str | None, host: str, port: int, workers: int) -> None:
    """Serve the OpenAI-compatible API."""
    settings = public_url(settings_or_exit(config), host, port)
    source = config or "(built-in defaults)"
    if workers > 1 and settings.redis_url is None:
        fail(
            "--workers > 1 needs redis_url in the config: without it every worker would keep"
            " its own limits and balances (see the README's 'Scaling out')"
        )
    listener = listen(host, port)
    try:
        app = _prepare(settings, source)
    except ConfigError as exc:
        listener.close()
        fail(f"config error: {exc}")
        return
    store = store_label(settings.database_url)
    if _new_store(settings):  # said before the setup check, which creates it
        click.echo(bold(f"relaygate: creating a new database: {store}"), err=True)
    limiter = app.gateway.gate.description
    unserved = unserved_models(settings)
    models = [f"{m} (no upstream)" if m in unserved else m for m in settings.models]
    click.echo(
        f"relaygate: serving http://{host}:{port} with store {store}, limiter {limiter},"
        f" {workers} worker(s), models: {', '.join(models) or 'none'}",
        err=True,
    )
    if unserved:
        log.warning(
            "no upstream serves %s: each answers 503 and is left out of /v1/models (set"
            " OPENAI_API_KEY for the built-in catalog's, or give them upstreams in the config)",
            ", ".join(unserved),
        )
    announce_setup(settings)  # last, so the link is what the operator sees; logging is set up
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": functools.partial(HttpProtocol, limits=protocol_limits(settings)),
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "proxy_headers": False,
        # The app ends requests still running at its own deadline (an SSE error event or a
        # 503, billed as cancelled); uvicorn's cancellation is only the backstop.
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + 5,
        # Idle keep-alive connections live longer than a load balancer's usual 60 s, so the
        # client side closes them: a server closing one as a request is sent on it races.
        "timeout_keep_alive": 75,
    }
    if workers == 1:
        run_server(uvicorn.Config(app, **options), listener)  # type: ignore[arg-type]
        return
    # Each worker builds its own app from the same settings, found through the environment.
    if config:
        os.environ["RELAYGATE_CONFIG"] = config
    if settings.public_url is not None:
        os.environ["RELAYGATE_PUBLIC_URL"] = settings.public_url
    os.environ[_SOURCE] = source
    workers_config = uvicorn.Config(
        "relaygate.cli.serve:worker_app",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )
    with shared_metrics():
        run_server(workers_config, listener)


@contextlib.contextmanager
def shared_metrics() -> Iterator[None]:
    """The workers keep their metrics in one folder (prometheus_client's multiprocess mode), so
    that each worker's ``/metrics`` answers for all of them: a temporary folder, removed at the
    end, unless ``PROMETHEUS_MULTIPROC_DIR`` names one (then it is the operator's to empty
    between runs). Set before the workers start: they read it as they import the library."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    folder = tempfile.mkdtemp(prefix="relaygate-metrics-")
    os.environ[MULTIPROCESS_DIR] = folder
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(folder, ignore_errors=True)


def _new_store(settings: Settings) -> bool:
    try:
        return store_would_be_created(settings)
    except Exception:  # unreachable, say: start-up reports it in its own words
        return False


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said about serving: a busy port or an
    address that is not this machine's ends the command with one line and exit status 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (another process listens there: stop it or pick another --port)"
        busy = exc.errno == errno.EADDRINUSE
        click.echo(
            f"relaygate: cannot listen on {host}:{port}: {exc.strerror or exc}"
            f"{hint if busy else ''}",
            err=True,
        )
        sys.exit(1)
    sock.set_inheritable(True)
    return sock


def run_server(config: uvicorn.Config, listener: socket.socket) -> None:
    """uvicorn on the socket bound already (one process, or ``config.workers`` processes)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[listener]).run()
        else:
            server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    if config.workers == 1 and not server.started:
        sys.exit(3)  # start-up failed (said in the log); uvicorn's own status for it
