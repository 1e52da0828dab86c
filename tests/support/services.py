"""Real PostgreSQL and Redis for the scale-out tests.

``shared_*`` use the servers this machine kind runs (127.0.0.1:5432, 127.0.0.1:6379), each test
in its own database / key prefix. ``Private*`` start a server of our own on a free port, so a
test can stop and restart it without disturbing anything else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REQUIRE = os.environ.get("RELAYGATE_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def need(service: str, port: int) -> None:
    """Skip (or fail, with RELAYGATE_REQUIRE_SERVICES=1) when ``service`` is not running."""
    if _listening(port):
        return
    reason = f"{service} is not listening on 127.0.0.1:{port}"
    if REQUIRE:
        pytest.fail(f"{reason} (RELAYGATE_REQUIRE_SERVICES=1 makes it mandatory)")
    pytest.skip(reason)


def _psql(sql: str, url: str = PG_ADMIN_URL) -> None:
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   capture_output=True, timeout=60)


def create_database() -> tuple[str, str]:
    """A fresh database on the shared server: ``(url, name)``."""
    need("PostgreSQL", 5432)
    name = f"relaygate_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:5432/{name}", name


def drop_database(name: str) -> None:
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port) == up:
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not go {'up' if up else 'down'}")


class PrivateRedis:
    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed") if REQUIRE else pytest.skip(
                "redis-server is not installed")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait(self.port, up=True)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        _wait(self.port, up=False)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePostgres:
    """initdb into a temporary folder and run it on a free port, as the postgres user.

    The folder is made with ``tempfile.mkdtemp`` rather than under pytest's private (0700)
    temporary root, which the postgres user cannot enter.
    """

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            pytest.fail("PostgreSQL binaries are missing") if REQUIRE else pytest.skip(
                "PostgreSQL binaries are missing")
        self.bin = bins[-1]
        self.directory = Path(tempfile.mkdtemp(prefix="relaygate-pg-"))
        self.data = self.directory / "pgdata"
        self.port = free_port()
        self.directory.chmod(0o755)
        shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")

    def _as_postgres(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PrivatePostgres:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
            str(self.directory / "pg.log"), "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
            f"{self.directory} -c fsync=off", "start",
        )
        _wait(self.port, up=True)
        return self

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                          "stop")
        _wait(self.port, up=False)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
