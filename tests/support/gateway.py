"""A real ``relaygate serve`` process on loopback, with its own config and SQLite file."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

OPERATOR_TOKEN = "operator-token-for-tests-0123456789"
"""The ``operator_token`` every test gateway is configured with (unless its config says else)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaygate", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def http(
    method: str, url: str, body: Any = None, key: str | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """One request; ``key`` is sent as ``Authorization: Bearer <key>``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class GatewayProcess:
    """``relaygate serve`` started with ``config`` (a dict written as YAML)."""

    def __init__(self, directory: Path, config: dict[str, Any], args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.args = args
        config = {
            "database_url": f"sqlite:///{directory / 'relaygate.db'}",
            "operator_token": OPERATOR_TOKEN,
            **config,
        }
        self.config_path = directory / "relaygate.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = directory / "relaygate.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> GatewayProcess:
        """Run ``relaygate serve`` and wait until ``/health`` answers 200. On failure the
        process is ended, the log closed, and the error carries the tail of this start's log."""
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "relaygate",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
            self._wait_healthy(timeout)
        except BaseException as exc:
            self._end()
            if not isinstance(exc, RuntimeError):
                raise
            raise RuntimeError(f"{exc}; the end of its log:\n{self.log_tail()}") from None
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relaygate exited at start-up ({self.process.returncode})")
            try:
                if http("GET", f"{self.url}/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"relaygate did not start within {timeout} s")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the latest start wrote to the log."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            text = log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, and wait for the graceful shutdown (in-flight requests, ledger flush)."""
        self._end()

    def _end(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_path, *args, check=check)

    def create_key(self, *args: str) -> dict[str, Any]:
        """Create a key with the CLI and wait until the running gateway knows it."""
        created: dict[str, Any] = json.loads(self.cli("keys", "create", "--json", *args).stdout)
        self.wait_until(lambda: self.get("/v1/credits", created["key"])[0] == 200)
        return created

    def get(self, path: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return http("GET", self.url + path, key=key)

    def operator_get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """``GET`` an operator endpoint (``/health/details``, ``/metrics``) with the token."""
        return http("GET", self.url + path, key=OPERATOR_TOKEN)

    def post(self, path: str, body: Any, key: str | None = None) -> tuple[int, dict[str, str], Any]:
        status, headers, raw = http("POST", self.url + path, body, key=key)
        try:
            return status, headers, json.loads(raw)
        except ValueError:
            return status, headers, raw

    def credits(self, key: str) -> dict[str, Any]:
        status, _, raw = self.get("/v1/credits", key)
        assert status == 200, raw
        result: dict[str, Any] = json.loads(raw)
        return result

    @staticmethod
    def wait_until(check: Any, timeout: float = 10.0, message: str = "condition") -> None:
        """Poll ``check`` until it holds (the only place tests wait, and never on a clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"{message} did not hold within {timeout}s")


def ledger(gateway: GatewayProcess, key_id: str) -> list[dict[str, Any]]:
    """The key's ledger rows, read straight from the gateway's SQLite file."""
    path = gateway.directory / "relaygate.db"
    with closing(sqlite3.connect(path, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM ledger WHERE key_id = ?", (key_id,)).fetchall()
        return [dict(row) for row in rows]


def credits_of(gateway: GatewayProcess, key: str) -> dict[str, Any]:
    """``GET /v1/credits`` with money parsed as Decimal (never float)."""
    status, _, raw = gateway.get("/v1/credits", key)
    assert status == 200, raw
    result: dict[str, Any] = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    return result
