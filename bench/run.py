"""The relaygate benchmark: one command, one JSON result, one plot.

    python -m bench.run [--seconds 10] [--rounds 3] [--soak-seconds 0] [--out bench/results]
                        [--parts throughput,sequential,open_loop,scaling,memory,messages]

It starts a fast mock upstream (0 ms and 50 ms latency), a bare aiohttp pass-through proxy (the
practical Python floor) and relaygate with key auth, rate limits, credit reservation and the
ledger all on; drives each with the same load (wrk for closed-loop throughput and sequential
latency, our open-loop generator for added latency against offered load); and writes
``results/latest.json`` and ``results/latest.png`` (``partial.*`` when ``--parts`` picks a
subset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import open_loop, run_wrk, wrk_script

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("throughput", "sequential", "open_loop", "scaling", "memory", "messages")
BODY = {
    "model": "MODEL",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Please introduce yourself"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stack:
    """The processes under test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str, port: int) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{port}.log").open("wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        self.procs.append(proc)
        wait_port(port)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def start(self, redis_url: str | None) -> dict[str, Any]:
        names = ("mock0", "mock50", "bare0", "bare50", "relaygate", "redis1", "redis2", "redis4")
        ports = {name: free_port() for name in names}
        self.spawn("-m", "bench.mock_upstream", "--port", str(ports["mock0"]), port=ports["mock0"])
        self.spawn(
            "-m",
            "bench.mock_upstream",
            "--port",
            str(ports["mock50"]),
            "--latency-ms",
            "50",
            port=ports["mock50"],
        )
        for latency in ("0", "50"):
            self.spawn(
                "-m",
                "bench.bare_proxy",
                "--port",
                str(ports[f"bare{latency}"]),
                "--upstream",
                f"http://127.0.0.1:{ports['mock' + latency]}",
                port=ports[f"bare{latency}"],
            )
        config = self.workdir / "relaygate.yaml"
        models = {
            f"bench-{latency}ms": {
                "pricing": {"input": "1.75", "cached_input": "0.175", "output": "14"},
                "max_output_tokens": 4096,
                "upstreams": [
                    {
                        "provider": "openai",
                        "api_key": "sk-bench-upstream",
                        "base_url": f"http://127.0.0.1:{ports['mock' + latency]}/v1",
                    }
                ],
            }
            for latency in ("0", "50")
        }
        # /v1/messages passed through to the mock as an Anthropic-style upstream
        models["bench-claude-0ms"] = {
            "pricing": {"input": "3", "cached_input": "0.3", "output": "15"},
            "max_output_tokens": 4096,
            "upstreams": [
                {
                    "provider": "anthropic",
                    "api_key": "sk-bench-upstream",
                    "base_url": f"http://127.0.0.1:{ports['mock0']}",
                }
            ],
        }
        config.write_text(
            json.dumps(
                {
                    "database_url": f"sqlite:///{self.workdir / 'bench.db'}",
                    "log_level": "warning",
                    "models": models,
                }
            )
        )
        # only serve and db upgrade create a database
        subprocess.run(
            [sys.executable, "-m", "relaygate", "db", "upgrade", "--config", str(config)],
            capture_output=True,
            check=True,
        )
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "relaygate",
                "keys",
                "create",
                "--config",
                str(config),
                "--credits",
                "1000000",
                "--rpm",
                "100000000",
                "--tpm",
                "2000000000",
                "--concurrency",
                "100000",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=self.workdir,
        )
        key = json.loads(created.stdout)["key"]
        proc = self.spawn(
            "-m",
            "relaygate",
            "serve",
            "--config",
            str(config),
            "--port",
            str(ports["relaygate"]),
            port=ports["relaygate"],
        )
        info: dict[str, Any] = {"ports": ports, "key": key, "relaygate_pid": proc.pid}
        if redis_url:
            shared = self.workdir / "relaygate-redis.yaml"
            data = json.loads(config.read_text())
            data["redis_url"] = redis_url
            data["redis_key_prefix"] = f"bench-{os.getpid()}"
            shared.write_text(json.dumps(data))
            info["shared_config"] = shared
        return info

    def start_shared(self, info: dict[str, Any], workers: int) -> subprocess.Popen[bytes]:
        port = info["ports"][f"redis{workers}"]
        return self.spawn(
            "-m",
            "relaygate",
            "serve",
            "--config",
            str(info["shared_config"]),
            "--port",
            str(port),
            "--workers",
            str(workers),
            port=port,
        )


def body(model: str, stream: bool) -> str:
    data = dict(BODY, model=model)
    if stream:
        data["stream"] = True
    return json.dumps(data, separators=(",", ":"))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = Stack(workdir)
    info = stack.start(args.redis_url)
    ports, key, pid = info["ports"], info["key"], info["relaygate_pid"]

    def url(target: str, latency: str, path: str = "/v1/chat/completions") -> str:
        port = ports["relaygate"] if target == "relaygate" else ports[f"bare{latency}"]
        return f"http://127.0.0.1:{port}{path}"

    results: dict[str, Any] = {
        "throughput": {},
        "throughput_rounds": {},
        "sequential": {},
        "sequential_rounds": {},
        "open_loop": [],
        "memory": {},
    }
    pids = {"bare0": stack.procs[2].pid, "bare50": stack.procs[3].pid, "relaygate": pid}
    try:
        for latency in ("0", "50") if "throughput" in args.parts else ():
            for mode in ("nonstream", "stream"):
                rounds = throughput_rounds(args, workdir, key, mode, latency, url, pids)
                results["throughput_rounds"][f"{mode}/{latency}ms"] = rounds
                for target in ("bare", "relaygate"):
                    r = rounds["median"][target]
                    results["throughput"][f"{target}/{mode}/{latency}ms"] = r
                    print(
                        f"throughput {target:9} {mode:9} {latency:>2}ms: "
                        f"{r['requests_per_second']:8.0f} req/s p50 {r['p50_ms']:.2f} ms"
                        f" cpu {r['cpu_us_per_request']:6.1f} us/req errors {r['errors']}",
                        flush=True,
                    )
                print(
                    f"  ratio per round {[round(x, 3) for x in rounds['ratios']]},"
                    f" median {rounds['ratio']:.3f}; cpu ratio {rounds['cpu_ratio']:.3f}",
                    flush=True,
                )
        for mode in ("nonstream", "stream") if "messages" in args.parts else ():
            rounds = throughput_rounds(
                args, workdir, key, mode, "0",
                lambda target, latency: url(target, latency, "/v1/messages"), pids,
                payload=body("bench-claude-0ms", mode == "stream"),
            )  # fmt: skip
            results["throughput_rounds"][f"messages/{mode}/0ms"] = rounds
            for target in ("bare", "relaygate"):
                r = rounds["median"][target]
                results["throughput"][f"{target}/messages/{mode}/0ms"] = r
            print(
                f"throughput /v1/messages {mode:9}: ratio per round"
                f" {[round(x, 3) for x in rounds['ratios']]}, median {rounds['ratio']:.3f};"
                f" cpu ratio {rounds['cpu_ratio']:.3f}",
                flush=True,
            )
        if "sequential" in args.parts:
            for mode in ("nonstream", "stream"):
                rounds = sequential_rounds(args, workdir, key, mode, url)
                results["sequential_rounds"][mode] = rounds
                for target in ("bare", "relaygate"):
                    results["sequential"][f"{target}/{mode}"] = rounds["median"][target]
                print(
                    f"sequential {mode:9}: added p50 per round"
                    f" {[round(x, 3) for x in rounds['added_p50_ms']]} ms,"
                    f" median {rounds['added_p50_ms_median']:.3f} ms",
                    flush=True,
                )
        max_rps = (
            results["throughput"].get("relaygate/nonstream/0ms", {}).get("requests_per_second", 0.0)
        )
        if "open_loop" in args.parts and max_rps:
            results["open_loop"] = open_loop_rows(args, key, url, max_rps)
        if args.redis_url and "scaling" in args.parts:
            results["scaling"] = scaling(stack, info, workdir, args)
        if "memory" in args.parts:
            results["memory"] = memory(workdir, url("relaygate", "0"), key, pid, args)
    finally:
        stack.stop()
    return results


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_loop_rows(
    args: argparse.Namespace, key: str, url: Any, max_rps: float
) -> list[dict[str, Any]]:
    """Added latency at 10%, 25%, 50% and 75% of relaygate's maximum, open loop."""
    payload = body("bench-0ms", False).encode()
    rows = []
    for fraction in (0.1, 0.25, 0.5, 0.75):
        rate = max(50.0, max_rps * fraction)
        row: dict[str, Any] = {"fraction_of_max": fraction, "offered_rps": rate}
        for target in ("bare", "relaygate"):
            r = asyncio.run(open_loop(url(target, "0"), key, payload, rate, args.seconds))
            row[target] = r.__dict__
        row["added_p50_ms"] = row["relaygate"]["p50_ms"] - row["bare"]["p50_ms"]
        row["added_p99_ms"] = row["relaygate"]["p99_ms"] - row["bare"]["p99_ms"]
        rows.append(row)
        print(
            f"open loop {rate:7.0f} req/s: added p50 {row['added_p50_ms']:.2f} ms,"
            f" p99 {row['added_p99_ms']:.2f} ms",
            flush=True,
        )
    return rows


def median_run(runs: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    """The run in the middle when ordered by ``measure``."""
    return sorted(runs, key=lambda r: r[measure])[len(runs) // 2]


def throughput_rounds(
    args: argparse.Namespace,
    workdir: Path,
    key: str,
    mode: str,
    latency: str,
    url: Any,
    pids: dict[str, int],
    payload: str | None = None,
) -> dict[str, Any]:
    """Closed-loop throughput of the bare proxy and relaygate, alternating for
    ``args.rounds`` rounds: on a shared or virtual machine the speed of the whole box drifts
    within seconds, and a ratio taken from back-to-back runs is far steadier than one taken
    minutes apart. Each run also records the target's CPU time per request."""
    script = wrk_script(workdir, key, payload or body(f"bench-{latency}ms", mode == "stream"))
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "relaygate": []}
    for target in ("bare", "relaygate"):
        run_wrk(url(target, latency), script, 16, 2)  # warm-up
    for _ in range(args.rounds):
        for target in ("bare", "relaygate"):
            pid = pids["relaygate" if target == "relaygate" else f"bare{latency}"]
            before = cpu_seconds(pid)
            r = run_wrk(url(target, latency), script, 16, args.seconds)
            served = max(1.0, r.requests_per_second * args.seconds)
            row = dict(r.__dict__, cpu_us_per_request=(cpu_seconds(pid) - before) / served * 1e6)
            runs[target].append(row)
    ratios = [
        g["requests_per_second"] / b["requests_per_second"]
        for b, g in zip(runs["bare"], runs["relaygate"], strict=True)
    ]
    cpu = {t: statistics.median(r["cpu_us_per_request"] for r in runs[t]) for t in runs}

    return {
        "runs": runs,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "cpu_ratio": cpu["bare"] / cpu["relaygate"],
        "median": {t: median_run(runs[t], "requests_per_second") for t in runs},
    }


def sequential_rounds(
    args: argparse.Namespace, workdir: Path, key: str, mode: str, url: Any
) -> dict[str, Any]:
    """One connection, one request at a time, alternating the bare proxy and relaygate for
    ``args.rounds`` rounds; the added p50 is the median of the per-round differences."""
    script = wrk_script(workdir, key, body("bench-0ms", mode == "stream"))
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "relaygate": []}
    for target in ("bare", "relaygate"):
        run_wrk(url(target, "0"), script, 1, 1)  # warm-up
    for _ in range(args.rounds):
        for target in ("bare", "relaygate"):
            runs[target].append(run_wrk(url(target, "0"), script, 1, args.seconds).__dict__)
    added = [
        g["p50_ms"] - b["p50_ms"] for b, g in zip(runs["bare"], runs["relaygate"], strict=True)
    ]

    return {
        "runs": runs,
        "added_p50_ms": added,
        "added_p50_ms_median": statistics.median(added),
        "median": {t: median_run(runs[t], "p50_ms") for t in runs},
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and every process below it (``--workers`` children)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in Path(f"/proc/{current}/task/{current}/children").read_text().split():
            pending.append(int(child))
    return total


class RedisProbe:
    """redis-server's own CPU time and command counters, read before and after a run."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pid = int(self.client.info("server")["process_id"])

    def read(self) -> dict[str, float]:
        stats = self.client.info("stats")
        commands = self.client.info("commandstats")
        evalsha = commands.get("cmdstat_evalsha", {}).get("calls", 0)
        return {
            "cpu": cpu_seconds(self.pid) if Path(f"/proc/{self.pid}").exists() else 0.0,
            "commands": float(stats["total_commands_processed"]),
            "reads": float(stats["total_reads_processed"]),
            "evalsha": float(evalsha) + commands.get("cmdstat_eval", {}).get("calls", 0),
        }


def gate_run(
    target: str, script: Path, seconds: int, pid: int, probe: RedisProbe | None
) -> dict[str, Any]:
    """One closed-loop run (16 connections) with relaygate's CPU per request (all its worker
    processes) and, on the Redis gate, redis-server's CPU and commands per request."""
    before = tree_cpu_seconds(pid)
    redis_before = probe.read() if probe else None
    r = run_wrk(target, script, 16, seconds)
    served = max(1.0, r.requests_per_second * seconds)
    row: dict[str, Any] = dict(
        r.__dict__, cpu_us_per_request=(tree_cpu_seconds(pid) - before) / served * 1e6
    )
    if probe is not None and redis_before is not None:
        after = probe.read()
        per = {name: (after[name] - redis_before[name]) / served for name in after}
        # the probe's own two INFO calls are in the counts: negligible over a run
        row["redis_cpu_us_per_request"] = per["cpu"] * 1e6
        row["redis_commands_per_request"] = per["commands"]
        row["redis_reads_per_request"] = per["reads"]
        row["redis_scripts_per_request"] = per["evalsha"]
    row["total_cpu_us_per_request"] = row["cpu_us_per_request"] + row.get(
        "redis_cpu_us_per_request", 0.0
    )
    return row


def scaling(
    stack: Stack, info: dict[str, Any], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The Redis gate against the in-process one: one worker of each in alternating rounds
    (the ratio is the median of the per-round ratios), then 2 and 4 workers on Redis. Each run
    records CPU per request of relaygate (every worker) and of redis-server, and Redis's
    commands and reads (about one per round trip) per request."""
    out: dict[str, Any] = {}
    probe = RedisProbe(args.redis_url)
    script = wrk_script(workdir, info["key"], body("bench-0ms", False))
    in_process_target = f"http://127.0.0.1:{info['ports']['relaygate']}/v1/chat/completions"
    for workers in (1, 2, 4):
        proc = stack.start_shared(info, workers)
        port = info["ports"][f"redis{workers}"]
        target = f"http://127.0.0.1:{port}/v1/chat/completions"
        time.sleep(1.0)  # the key cache of every worker loads at start-up
        run_wrk(target, script, 16, 2)
        if workers == 1:
            runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "redis": []}
            run_wrk(in_process_target, script, 16, 2)
            for _ in range(args.rounds):
                runs["in_process"].append(
                    gate_run(in_process_target, script, args.seconds, info["relaygate_pid"], None)
                )
                runs["redis"].append(gate_run(target, script, args.seconds, proc.pid, probe))
            ratios = [
                r["requests_per_second"] / m["requests_per_second"]
                for m, r in zip(runs["in_process"], runs["redis"], strict=True)
            ]
            out["gate_rounds"] = runs
            out["gate_ratios"] = ratios
            out["gate_ratio"] = statistics.median(ratios)
            out["in_process"] = median_run(runs["in_process"], "requests_per_second")
            r = median_run(runs["redis"], "requests_per_second")
            for t in runs:
                out[f"{t}_total_cpu_us_per_request"] = statistics.median(
                    x["total_cpu_us_per_request"] for x in runs[t]
                )
            print(
                f"gate in-process, 1 worker: {out['in_process']['requests_per_second']:8.0f}"
                f" req/s cpu {out['in_process_total_cpu_us_per_request']:.0f} us/req",
                flush=True,
            )
            print(
                f"  redis/in-process per round {[round(x, 3) for x in ratios]},"
                f" median {out['gate_ratio']:.3f}",
                flush=True,
            )
        else:
            r = gate_run(target, script, args.seconds, proc.pid, probe)
        out[f"workers_{workers}"] = r
        print(
            f"scaling redis gate, {workers} worker(s): {r['requests_per_second']:8.0f} req/s"
            f" errors {r['errors']}; cpu us/req relaygate {r['cpu_us_per_request']:.0f}"
            f" + redis {r['redis_cpu_us_per_request']:.0f};"
            f" redis commands {r['redis_commands_per_request']:.2f}"
            f" reads {r['redis_reads_per_request']:.2f} per request",
            flush=True,
        )
        proc.terminate()
        proc.wait(30)
    base = out["workers_1"]["requests_per_second"]
    out["speedup"] = out["workers_2"]["requests_per_second"] / base
    out["speedup_4"] = out["workers_4"]["requests_per_second"] / base
    return out


def memory(workdir: Path, url: str, key: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """RSS after 100,000 more requests, and over an optional soak."""
    script = wrk_script(workdir, key, body("bench-0ms", False))
    before = rss_mb(pid)
    served = 0
    while served < 100_000:
        r = run_wrk(url, script, 16, 5)
        served += int(r.requests_per_second * 5)
    out: dict[str, Any] = {
        "rss_mb_start": before,
        "requests": served,
        "rss_mb_after_100k": rss_mb(pid),
        "soak": [],
    }
    print(
        f"memory: {before:.1f} MB at start of phase, {out['rss_mb_after_100k']:.1f} MB after"
        f" {served} requests",
        flush=True,
    )
    start = time.monotonic()
    while time.monotonic() - start < args.soak_seconds:
        run_wrk(url, script, 8, 10)
        out["soak"].append({"seconds": round(time.monotonic() - start), "rss_mb": rss_mb(pid)})
        print(f"soak {out['soak'][-1]}", flush=True)
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    t, rounds = results["throughput"], results["throughput_rounds"]
    summary: dict[str, Any] = {}
    for mode in ("nonstream", "stream"):
        if f"{mode}/0ms" not in rounds:
            continue
        summary[f"throughput_ratio_{mode}"] = rounds[f"{mode}/0ms"]["ratio"]
        summary[f"throughput_ratio_{mode}_rounds"] = rounds[f"{mode}/0ms"]["ratios"]
        summary[f"cpu_per_request_ratio_{mode}"] = rounds[f"{mode}/0ms"]["cpu_ratio"]
        summary[f"requests_per_second_{mode}"] = {
            target: t[f"{target}/{mode}/0ms"]["requests_per_second"]
            for target in ("bare", "relaygate")
        }
    for mode in ("nonstream", "stream"):
        messages = rounds.get(f"messages/{mode}/0ms")
        if messages is not None:
            summary[f"throughput_ratio_messages_{mode}"] = messages["ratio"]
            summary[f"throughput_ratio_messages_{mode}_rounds"] = messages["ratios"]
            summary[f"cpu_per_request_ratio_messages_{mode}"] = messages["cpu_ratio"]
    for mode, seq in results["sequential_rounds"].items():
        summary[f"sequential_added_p50_ms_{mode}"] = seq["added_p50_ms_median"]
        summary[f"sequential_added_p50_ms_{mode}_rounds"] = seq["added_p50_ms"]
    half = [row for row in results["open_loop"] if row["fraction_of_max"] == 0.5]
    if half:
        summary["added_p99_ms_at_half_max"] = half[0]["added_p99_ms"]
    if results["memory"]:
        summary["rss_mb_after_100k"] = results["memory"].get("rss_mb_after_100k")
        soak = results["memory"].get("soak") or []
        if soak:
            summary["rss_mb_soak_first_last"] = [soak[0]["rss_mb"], soak[-1]["rss_mb"]]
    if "scaling" in results:
        scale = results["scaling"]
        summary["workers_2_speedup"] = scale["speedup"]
        summary["workers_4_speedup"] = scale["speedup_4"]
        summary["redis_gate_ratio"] = scale["gate_ratio"]
        summary["redis_gate_ratio_rounds"] = scale["gate_ratios"]
        summary["gate_cpu_us_per_request"] = {
            "in_process": scale["in_process_total_cpu_us_per_request"],
            "redis": scale["redis_total_cpu_us_per_request"],
        }
    return summary


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["open_loop"]
    x = [row["offered_rps"] for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, [row["added_p50_ms"] for row in rows], marker="o", label="added p50")
    ax.plot(x, [row["added_p99_ms"] for row in rows], marker="s", label="added p99")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("offered load (requests/s, non-streaming, 0 ms upstream)")
    ax.set_ylabel("relaygate latency minus bare proxy (ms)")
    ax.set_title("Latency relaygate adds over a bare aiohttp proxy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measurement")
    parser.add_argument(
        "--soak-seconds",
        type=int,
        default=0,
        help="memory soak after the 100k requests (the report uses 600)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating bare/relaygate rounds per throughput row (the ratio is their median)",
    )
    parser.add_argument(
        "--parts",
        type=lambda text: set(text.split(",")),
        default=set(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (all by default)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for the multi-worker row ('' to skip it)",
    )
    args = parser.parse_args()
    if not args.parts <= set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(args.parts - set(PARTS)))}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="relaygate-bench-") as tmp:
        results = measure(args, Path(tmp))
    results["summary"] = summarize(results)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    name = "latest" if args.parts == set(PARTS) else "partial"  # a partial run keeps latest
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2))
    if results["open_loop"]:
        plot(results, args.out / f"{name}.png")
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
