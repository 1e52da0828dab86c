"""Instructions per request under callgrind: a cost figure that repeats, whatever else the
machine is doing.

    python -m bench.instructions [--requests 300] [--warmup 200] [--stream]
                                 [--redis-url redis://127.0.0.1:6379/0] [--connections 1]
                                 [--src PATH] [--otel [RATIO]] [--no-request-log]
                                 [--route chat|responses|responses-passthrough]

It starts the mock upstream and relaygate (key auth, rate limits, credit reservation and the
ledger all on, as in ``bench.run``), with relaygate under ``valgrind --tool=callgrind``. It sends
``--warmup`` sequential requests, zeroes the counters, sends ``--requests`` more, and prints the
instructions relaygate's process ran per request. The ledger flush and the key refresh are
moved out of the measured window (every 600 s), so the figure is the request path's own.
Needs valgrind (Debian's ``valgrind`` package); a run takes about a minute.

``--redis-url`` puts relaygate on the Redis gate; it then also prints Redis's commands, reads
(about one per round trip) and redis-server CPU per request over the measured window.
``--connections`` sends from that many connections at once (the Redis gate batches the calls
of concurrent requests). ``--src`` runs another checkout's relaygate (an A/B against main).
``--otel`` turns tracing on (``RATIO``: its ``sample_ratio``, 1 by default), exporting to the
mock upstream (which answers every POST 200).
``--no-request-log`` turns the request log off (``request_log: false``): the difference to a
run with it on is what the log's lines cost (the request metrics are kept either way).
``--keep FILE`` copies the measured window's callgrind dump there (``callgrind_annotate`` it
to see which C functions the instructions ran in).
``--route`` picks the request: chat completions (the default), ``POST /v1/responses`` translated
to the chat-completions upstream, or passed through to the mock's ``/v1/responses``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.run import ROOT, RedisProbe, Stack, body, free_port, wait_port


def _config(
    workdir: Path,
    upstream_port: int,
    redis_url: str | None = None,
    otel: float | None = None,
    request_log: bool = True,
) -> Path:
    config = workdir / "relaygate.yaml"
    upstream = {
        "provider": "openai",
        "api_key": "sk-bench-upstream",
        "base_url": f"http://127.0.0.1:{upstream_port}/v1",
    }
    pricing = {"input": "1.75", "cached_input": "0.175", "output": "14"}
    model = {"pricing": pricing, "max_output_tokens": 4096, "upstreams": [upstream]}
    passthrough = {**model, "upstreams": [{**upstream, "options": {"responses": True}}]}
    settings = {
        "database_url": f"sqlite:///{workdir / 'bench.db'}",
        "log_level": "warning",
        "ledger_flush_seconds": 600,
        "key_refresh_seconds": 600,
        "models": {"bench-0ms": model, "bench-passthrough": passthrough},
        "request_log": request_log,
    }
    if redis_url:
        settings["redis_url"] = redis_url
        settings["redis_key_prefix"] = f"bench-instructions-{os.getpid()}"
    if otel is not None:
        endpoint = f"http://127.0.0.1:{upstream_port}/v1/traces"
        settings["otel"] = {"enabled": True, "endpoint": endpoint, "sample_ratio": otel}
    config.write_text(json.dumps(settings))
    return config


def _create_key(config: Path, workdir: Path, src: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(src))  # the measured checkout's CLI, as for serve
    upgrade = ("-m", "relaygate", "db", "upgrade", "--config", str(config))
    subprocess.run(
        [sys.executable, *upgrade], capture_output=True, check=True, cwd=workdir, env=env
    )
    create = ("-m", "relaygate", "keys", "create", "--config", str(config), "--json")
    limits = ("--rpm", "100000000", "--tpm", "2000000000", "--concurrency", "100000")
    created = subprocess.run(
        [sys.executable, *create, *limits, "--credits", "1000000"],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
        env=env,
    )
    return str(json.loads(created.stdout)["key"])


def _request(route: str, stream: bool) -> tuple[str, str]:
    """The path and body of one request of ``route``."""
    if route == "chat":
        return "/v1/chat/completions", body("bench-0ms", stream)
    model = "bench-passthrough" if route == "responses-passthrough" else "bench-0ms"
    data: dict[str, object] = {
        "model": model,
        "max_output_tokens": 100,
        "input": "Please introduce yourself",
    }
    if stream:
        data["stream"] = True
    return "/v1/responses", json.dumps(data, separators=(",", ":"))


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    stack = Stack(workdir)
    mock_port, port = free_port(), free_port()
    stack.spawn("-m", "bench.mock_upstream", "--port", str(mock_port), port=mock_port)
    config = _config(workdir, mock_port, args.redis_url, args.otel, args.request_log)
    key = _create_key(config, workdir, args.src or ROOT / "src")
    out = workdir / "callgrind.out"
    valgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
    serve = ("-m", "relaygate", "serve", "--config", str(config), "--port", str(port))
    relaygate = subprocess.Popen(
        [*valgrind, sys.executable, *serve],
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=str(args.src or ROOT / "src")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=1200)  # callgrind starts slowly on a busy machine
        path, payload = _request(args.route, args.stream)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def send_on_one(count: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for _ in range(count):
                conn.request("POST", path, payload, headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise RuntimeError(f"relaygate answered {response.status}: {answer[:200]!r}")
            conn.close()

        def send(count: int) -> None:
            n = args.connections
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(send_on_one, [count // n + (i < count % n) for i in range(n)]))

        probe = RedisProbe(args.redis_url) if args.redis_url else None
        send(args.warmup)
        _callgrind("-z", str(relaygate.pid))
        before = probe.read() if probe else {}
        send(args.requests)
        after = probe.read() if probe else {}
        _callgrind("-d", str(relaygate.pid))
    finally:
        relaygate.terminate()
        relaygate.wait(120)
        stack.stop()
    n = args.requests
    result = {f"redis_{name}_per_request": (after[name] - before[name]) / n for name in after}
    dump = next(path for path in sorted(workdir.glob("callgrind.out.*")))
    if args.keep is not None:
        shutil.copyfile(dump, args.keep)
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            result["instructions_per_request"] = int(line.split()[1]) / n
            return result
    raise RuntimeError(f"no totals in {dump}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--stream", action="store_true", help="streamed requests (20 chunks)")
    parser.add_argument("--redis-url", default=None, help="on the Redis gate (default: in-process)")
    parser.add_argument("--connections", type=int, default=1, help="concurrent connections")
    parser.add_argument("--src", type=Path, default=None, help="relaygate's src directory")
    parser.add_argument(
        "--otel", type=float, nargs="?", const=1.0, help="with tracing on, at this sample_ratio"
    )
    parser.add_argument(
        "--no-request-log",
        dest="request_log",
        action="store_false",
        help="with the request log off (request_log: false)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy the measured window's callgrind dump here"
    )
    parser.add_argument(
        "--route", choices=("chat", "responses", "responses-passthrough"), default="chat"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relaygate-instructions-") as tmp:
        out = measure(args, Path(tmp))
    mode = "streaming" if args.stream else "non-streaming"
    if args.otel is not None:
        mode += f", traced (sample_ratio {args.otel:g})"
    if not args.request_log:
        mode += ", request log off"
    gate = "Redis" if args.redis_url else "in-process"
    print(
        f"{out['instructions_per_request'] / 1000:.1f}k instructions per {mode}"
        f" {args.route} request ({gate} gate, {args.connections} connection(s))"
    )
    if args.redis_url:
        print(
            f"redis: {out['redis_cpu_per_request'] * 1e6:.1f} us CPU,"
            f" {out['redis_commands_per_request']:.2f} commands,"
            f" {out['redis_reads_per_request']:.2f} reads,"
            f" {out['redis_evalsha_per_request']:.2f} scripts per request"
        )


if __name__ == "__main__":
    main()
