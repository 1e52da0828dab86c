"""Console pages on a large ledger: the server time of every page, in-process.

    python -m bench.console_pages [--db /tmp/relaygate-usage-scale.db] [--runs 20]

Works on a copy of the database ``bench.usage_scale`` seeds (2,000,000 ledger rows by
default; the original is left as it is). Adds the accounts the ledger names, a few keys, an
admin and a member of the busiest account, signs both in, then calls the console's ASGI app
for each page ``--runs`` times after a warm-up, timing from the call to the response's last
byte (no network: server time only). "Today" is set to the seeded history's last day, so the
30-day charts cover data. Writes ``bench/results/console_pages.json`` (p50/p95/max in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from relaygate.accounts import keys, sessions, usage, users
from relaygate.accounts.principal import Principal
from relaygate.app import create_app
from relaygate.console import charts
from relaygate.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-0123456789"
CLI = Principal(via="cli", id="cli", role="admin")


def _prepare_copy(source: Path, folder: Path) -> tuple[Path, str, int]:
    """The copy, its busiest account, and the last ledger time (ms)."""
    target = folder / "console-bench.db"
    shutil.copyfile(source, target)
    target.chmod(0o600)
    with sqlite3.connect(target) as db:
        busiest = db.execute(
            "SELECT account_id, COUNT(*) c FROM ledger GROUP BY account_id ORDER BY c DESC"
        ).fetchall()
        last = db.execute("SELECT MAX(created_at) FROM ledger").fetchone()[0]
        for i, (account_id, _) in enumerate(busiest):
            db.execute(
                "INSERT OR IGNORE INTO accounts (id, name, created_at, status, granted_micros,"
                " used_micros, unlimited, low_balance_alerted, revision)"
                " VALUES (?, ?, ?, 'active', ?, 0, 0, 0, 0)",
                (account_id, f"Account {i}", int(time.time()) - i, 100_000_000_000),
            )
    return target, str(busiest[0][0]), int(last)


async def _people(settings: Settings, account_id: str) -> tuple[str, str, str]:
    """Cookies of an admin and of a member of ``account_id``, and a request id of it."""
    app = create_app(settings)
    store = app.gateway.store
    await store.upgrade()
    for i in range(10):
        await keys.create_key(store, CLI, account_id, {"name": f"bench key {i}"})
    await users.create_user(store, "admin@bench.example", PASSWORD, "admin", None,
                            settings=settings)  # fmt: skip
    await users.create_user(store, "member@bench.example", PASSWORD, "member", account_id,
                            settings=settings)  # fmt: skip
    cookies = []
    for email in ("admin@bench.example", "member@bench.example"):
        _, cookie = await sessions.sign_in(store, settings, email, PASSWORD, "127.0.0.1")
        cookies.append(cookie)
    rows, _ = await usage.request_log(store, account_id=account_id, limit=1)
    await store.close()
    return cookies[0], cookies[1], rows[0]["request_id"]


def _scope(path: str, cookie: str) -> dict[str, Any]:
    route, _, query = path.partition("?")
    return {
        "type": "http", "method": "GET", "path": route, "raw_path": route.encode(),
        "query_string": query.encode(), "scheme": "http", "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080), "http_version": "1.1",
        "headers": [(b"host", b"127.0.0.1:8080"),
                    (b"cookie", f"relaygate_session={cookie}".encode())],
    }  # fmt: skip


async def _call(app: Any, path: str, cookie: str) -> tuple[float, int, int]:
    status = 0
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            size += len(message.get("body", b""))

    started = time.perf_counter()
    await app(_scope(path, cookie), receive, send)
    return (time.perf_counter() - started) * 1000, status, size


def _pages(account: str, request_id: str, cursor: str | None) -> list[tuple[str, str]]:
    member = ["/console/overview", "/console/keys", "/console/usage?days=7",
              "/console/usage?days=30", "/console/usage?days=90", "/console/usage.csv?days=90",
              "/console/requests", "/console/requests?status=upstream_error",
              "/console/requests?model=gpt-5.2", f"/console/requests?request_id={request_id}",
              "/console/billing"]  # fmt: skip
    if cursor:
        member.append(f"/console/requests?cursor={cursor}")
    admin = ["/console/accounts", "/console/accounts?q=Account", f"/console/accounts/{account}",
             f"/console/overview?account={account}", f"/console/usage?days=90&account={account}",
             "/console/codes", "/console/models", "/console/upstreams",
             "/console/upstreams/table", "/console/tokens", "/console/audit"]  # fmt: skip
    return [("member", p) for p in member] + [("admin", p) for p in admin]


async def measure(settings: Settings, account: str, cookies: dict[str, str], request_id: str,
                  runs: int, deep_cursor: str | None) -> dict[str, Any]:  # fmt: skip
    app = create_app(settings)
    await app.gateway.open()
    results: dict[str, Any] = {}
    try:
        for who, path in _pages(account, request_id, deep_cursor):
            cookie = cookies[who]
            _, status, size = await _call(app, path, cookie)  # warm-up
            assert status == 200, (path, status)
            times = [(await _call(app, path, cookie))[0] for _ in range(runs)]
            times.sort()
            results[path if who == "member" else f"admin {path}"] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                "max_ms": round(times[-1], 1), "bytes": size,
            }  # fmt: skip
            print(f"{who:6} {path[:60]:60} {results[list(results)[-1]]}", flush=True)
    finally:
        await app.gateway.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="/tmp/relaygate-usage-scale.db")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "console_pages.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        copy, account, last_ms = _prepare_copy(Path(args.db), Path(folder))
        base = load_settings(env={})
        settings = Settings(
            database_url=f"sqlite:///{copy}", journal_path=str(Path(folder) / "journal"),
            password_hash_memory_kib=8192, password_hash_time_cost=1,
            password_hash_parallelism=1, models=base.models,
        )  # fmt: skip
        charts.clock = lambda: last_ms / 1000
        admin_cookie, member_cookie, request_id = asyncio.run(_people(settings, account))
        deep = usage.encode_cursor(last_ms - 45 * 86_400_000, "~")
        with sqlite3.connect(copy) as db:
            rows = db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
        results = asyncio.run(measure(
            settings, account, {"admin": admin_cookie, "member": member_cookie}, request_id,
            args.runs, deep,
        ))  # fmt: skip
    worst = max(r["p95_ms"] for r in results.values())
    out = {"ledger_rows": rows, "account": account, "runs": args.runs,
           "worst_p95_ms": worst, "pages": results}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{rows} ledger rows; worst p95 {worst} ms; wrote {args.out}")


if __name__ == "__main__":
    main()
