"""Usage at scale over HTTP: time ``/admin/v1/usage`` and ``/admin/v1/requests`` on a real gateway.

    python -m bench.usage_http [--runs 50] [--backends sqlite,postgresql]
                               [--sqlite-path /tmp/relaygate-usage-scale.db]
                               [--postgres-url postgresql://postgres@127.0.0.1:5432/...]

Uses the databases ``python -m bench.usage_scale`` seeds (2,000,000 ledger rows; run it, or
``python -m bench.usage_scale --seed-only``, first) and its query matrix. For each backend:
``relaygate db upgrade``, an admin token from ``relaygate admin-token create``, then a real
``relaygate serve`` process on loopback; each request is sent one at a time over one keep-alive
connection (``http.client``), ``--runs`` times after 3 warm-ups, and timed from the request's
first byte out to the response's last byte in. ``/admin/v1/usage``: each ``group_by`` over
usage_scale's ranges, with no filter and with the heaviest account, key and model.
``/admin/v1/requests``: the first page, a page 45 days deep by cursor and one by ``to``, each
filter, ``limit`` 50 and 200.

Writes ``bench/results/usage_http.json``: p50/p95 in milliseconds per query and backend, the
worst p95 per endpoint, and the load average around each backend's run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from bench.usage_scale import (
    DEEP_AFTER,
    ROOT,
    busiest,
    ledger_count,
    log_filters,
    report_ranges,
)
from relaygate.accounts.usage import encode_cursor
from relaygate.store import SqlStore

PARAMS = {"account_id": "account", "key_id": "key", "model": "model", "status": "status"}
"""usage_scale's filter names -> the admin API's query parameters."""


class Gateway:
    """``relaygate serve`` on loopback over ``database_url``, with an admin token."""

    def __init__(self, database_url: str, directory: Path) -> None:
        self.directory = directory
        self.config = directory / "relaygate.yaml"
        config = {
            "database_url": database_url,
            # thousands of timed requests a minute from one token: not what the limit is for
            "admin_rate_limit_per_minute": 0,
            "models": {
                "relaygate-simulator": {
                    "pricing": {"input": "0.1", "output": "0.4"},
                    "upstreams": [{"provider": "simulator"}],
                }
            },
        }
        self.config.write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    str(ROOT / "src"),
                    *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                ]
            ),
        }
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "relaygate", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"relaygate {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def start(self) -> Gateway:
        self.cli("db", "upgrade")  # migrations added since the seed; additive
        self.token = json.loads(self.cli("admin-token", "create", "--name", "bench", "--json"))[
            "token"
        ]
        log = (self.directory / "relaygate.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaygate",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.directory,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relaygate exited at start-up:\n{self.logs()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"relaygate did not start:\n{self.logs()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def logs(self) -> str:
        return (self.directory / "relaygate.log").read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """One keep-alive connection; one request at a time."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[float, bytes]:
        """The response body and the milliseconds from sending to the last byte read."""
        began = time.perf_counter()
        self.connection.request("GET", path, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        spent = (time.perf_counter() - began) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
        return spent, body

    def timed(self, path: str, runs: int) -> dict[str, Any]:
        for _ in range(3):
            self.get(path)
        samples = []
        for _ in range(runs):
            spent, body = self.get(path)
            samples.append(spent)
        samples.sort()
        return {
            "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[math.ceil(len(samples) * 0.95) - 1], 2),  # nearest rank
            "max_ms": round(samples[-1], 2),
            "items": len(json.loads(body)["data"]),
            "bytes": len(body),
        }


def _query(path: str, **params: Any) -> str:
    return f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"


def _filter_params(filters: dict[str, str]) -> dict[str, str]:
    return {PARAMS[name]: value for name, value in filters.items()}


def _seconds(ms: int) -> int:
    assert ms % 1000 == 0, ms  # the admin API reads unix seconds
    return ms // 1000


def report_paths(heavy: dict[str, str]) -> dict[str, str]:
    """usage_scale's report matrix as ``/admin/v1/usage`` requests."""
    paths = {}
    for group_by, spans in report_ranges().items():
        for range_name, (start, end) in spans.items():
            for filter_name in ("none", "account_id", "key_id", "model"):
                filters = {} if filter_name == "none" else {filter_name: heavy[filter_name]}
                name = f"{range_name} group_by={group_by} filter={filter_name}"
                paths[name] = _query(
                    "/admin/v1/usage",
                    group_by=group_by,
                    **{"from": _seconds(start), "to": _seconds(end)},
                    **_filter_params(filters),
                )
    return paths


def log_paths(heavy: dict[str, str]) -> dict[str, str]:
    """The request log: first page, 45 days deep (by cursor, and by ``to``), each filter."""
    deep_cursor = encode_cursor(*DEEP_AFTER)
    pages: dict[str, dict[str, Any]] = {
        "first": {},
        "deep-cursor": {"cursor": deep_cursor},
        "deep-to": {"to": _seconds(DEEP_AFTER[0])},
    }
    paths = {}
    for filter_name, filters in log_filters(heavy).items():
        for page, extra in pages.items():
            for limit in (50, 200):
                name = f"{page} page limit={limit} filter={filter_name}"
                paths[name] = _query(
                    "/admin/v1/requests", limit=limit, **extra, **_filter_params(filters)
                )
    return paths


class LoadSampler(threading.Thread):
    """The 1-minute load average every 5 seconds while a backend is measured."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self.done.wait(5):
                return

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join()
        samples = self.samples or [0.0]
        return {"one_minute_min": min(samples), "one_minute_max": max(samples), "samples": samples}


def _worst(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    name = max(results, key=lambda n: results[n]["p95_ms"])
    return {"query": name, "p50_ms": results[name]["p50_ms"], "p95_ms": results[name]["p95_ms"]}


def run_backend(url: str, runs: int) -> dict[str, Any]:
    rows, heavy = asyncio.run(_busiest(url))
    with tempfile.TemporaryDirectory(prefix="relaygate-usage-http-") as directory:
        gateway = Gateway(url, Path(directory)).start()
        try:
            client = Client(gateway.port, gateway.token)
            sampler = LoadSampler()
            sampler.start()
            results: dict[str, Any] = {"ledger_rows": rows, "heaviest_filters": heavy}
            for endpoint, paths in (
                ("usage", report_paths(heavy)),
                ("requests", log_paths(heavy)),
            ):
                timed = {}
                for name, path in paths.items():
                    timed[name] = {"path": path, **client.timed(path, runs)}
                    print(url.split(":")[0], endpoint, name, timed[name], flush=True)
                results[endpoint] = timed
            results["worst_p95"] = {
                "usage": _worst(results["usage"]),
                "requests": _worst(results["requests"]),
            }
            results["load_average"] = sampler.stop()
            return results
        finally:
            gateway.stop()


async def _busiest(url: str) -> tuple[int, dict[str, str]]:
    store = SqlStore(url)
    try:
        return await ledger_count(store), await busiest(store)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--sqlite-path", default=str(Path(tempfile.gettempdir()) / "relaygate-usage-scale.db")
    )
    parser.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/relaygate_usage_scale"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "usage_http.json"))
    args = parser.parse_args()
    urls = {"sqlite": f"sqlite:///{args.sqlite_path}", "postgresql": args.postgres_url}
    out: dict[str, Any] = {
        "runs": args.runs,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "backends": {},
    }
    for backend in args.backends.split(","):
        out["backends"][backend] = run_backend(urls[backend], args.runs)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
