"""The ``POST /v1/responses`` rows, next to the bare proxy (as ``bench.run`` does for chat).

    python -m bench.responses_row [--seconds 10] [--rounds 3] [--out bench/results]

Same stack as ``bench.run`` (the mock upstream at 0 ms, the bare aiohttp proxy, relaygate with
key auth, limits, credits and the ledger on SQLite), driven by wrk at 16 connections, bare and
relaygate taking turns per round; the ratio is the median of the per-round ratios. Rows:

- ``passthrough``: relaygate ``/v1/responses`` → an upstream that speaks Responses (the mock's
  ``/v1/responses``), against the bare proxy forwarding ``/v1/responses`` to the same mock;
- ``translated``: relaygate ``/v1/responses`` → a chat-completions upstream (the mock's
  ``/v1/chat/completions``, answer rendered back as Responses), against the bare proxy
  forwarding chat completions;
- ``chat``: relaygate's own ``/v1/chat/completions`` against the bare proxy, measured in the
  same run: the reference the two rows above are read against.

Each non-streamed and streamed (20 deltas). Writes ``results/responses.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen import run_wrk, wrk_script
from bench.run import Stack, cpu_seconds, free_port

INPUT = {"max_output_tokens": 100, "input": "Please introduce yourself"}
CHAT = {"max_tokens": 100, "messages": [{"role": "user", "content": "Please introduce yourself"}]}


def start(stack: Stack, workdir: Path) -> dict[str, Any]:
    ports = {name: free_port() for name in ("mock", "bare", "relaygate")}
    stack.spawn("-m", "bench.mock_upstream", "--port", str(ports["mock"]), port=ports["mock"])
    mock = f"http://127.0.0.1:{ports['mock']}"
    stack.spawn("-m", "bench.bare_proxy", "--port", str(ports["bare"]), "--upstream", mock,
                port=ports["bare"])  # fmt: skip
    pricing = {"input": "1.75", "cached_input": "0.175", "output": "14"}
    upstream = {"provider": "openai", "api_key": "sk-bench-upstream", "base_url": mock + "/v1"}
    models = {
        "bench-translated": {"pricing": pricing, "max_output_tokens": 4096,
                             "upstreams": [upstream]},
        "bench-passthrough": {"pricing": pricing, "max_output_tokens": 4096,
                              "upstreams": [{**upstream, "options": {"responses": True}}]},
    }  # fmt: skip
    config = workdir / "relaygate.yaml"
    config.write_text(json.dumps({"database_url": f"sqlite:///{workdir / 'bench.db'}",
                                  "log_level": "warning", "models": models}))  # fmt: skip
    subprocess.run(  # only serve and db upgrade create a database
        [sys.executable, "-m", "relaygate", "db", "upgrade", "--config", str(config)],
        capture_output=True, check=True, cwd=workdir,
    )  # fmt: skip
    created = subprocess.run(
        [sys.executable, "-m", "relaygate", "keys", "create", "--config", str(config),
         "--credits", "1000000", "--rpm", "100000000", "--tpm", "2000000000",
         "--concurrency", "100000", "--json"],
        capture_output=True, text=True, check=True, cwd=workdir,
    )  # fmt: skip
    proc = stack.spawn("-m", "relaygate", "serve", "--config", str(config), "--port",
                       str(ports["relaygate"]), port=ports["relaygate"])  # fmt: skip
    return {"ports": ports, "key": json.loads(created.stdout)["key"], "pids": {
        "bare": stack.procs[1].pid, "relaygate": proc.pid}}  # fmt: skip


def row(args: argparse.Namespace, workdir: Path, info: dict[str, Any], kind: str, stream: bool
        ) -> dict[str, Any]:  # fmt: skip
    ports, key = info["ports"], info["key"]
    model = "bench-passthrough" if kind == "passthrough" else "bench-translated"
    relaygate_body = {"model": model, **(CHAT if kind == "chat" else INPUT), "stream": stream}
    bare_body = {"model": "m", **(INPUT if kind == "passthrough" else CHAT), "stream": stream}
    bare_path = "/v1/responses" if kind == "passthrough" else "/v1/chat/completions"
    path = "/v1/chat/completions" if kind == "chat" else "/v1/responses"
    targets = {
        "bare": (f"http://127.0.0.1:{ports['bare']}{bare_path}", bare_body),
        "relaygate": (f"http://127.0.0.1:{ports['relaygate']}{path}", relaygate_body),
    }
    scripts = {t: wrk_script(workdir / t, key, json.dumps(b)) for t, (_, b) in targets.items()}
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "relaygate": []}
    for target, (url, _) in targets.items():
        run_wrk(url, scripts[target], 16, 2)  # warm-up
    for _ in range(args.rounds):
        for target, (url, _) in targets.items():
            before = cpu_seconds(info["pids"][target])
            r = run_wrk(url, scripts[target], 16, args.seconds)
            served = max(1.0, r.requests_per_second * args.seconds)
            cpu = (cpu_seconds(info["pids"][target]) - before) / served * 1e6
            runs[target].append(dict(r.__dict__, cpu_us_per_request=cpu))
    ratios = [g["requests_per_second"] / b["requests_per_second"]
              for b, g in zip(runs["bare"], runs["relaygate"], strict=True)]  # fmt: skip
    return {
        "runs": runs,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "rps": {t: statistics.median(r["requests_per_second"] for r in runs[t]) for t in runs},
        "errors": {t: sum(r["errors"] for r in runs[t]) for t in runs},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for target in ("bare", "relaygate"):
            (workdir / target).mkdir()
        stack = Stack(workdir)
        try:
            info = start(stack, workdir)
            for kind in ("passthrough", "translated", "chat"):
                for stream in (False, True):
                    name = f"{kind}/{'stream' if stream else 'nonstream'}"
                    results[name] = r = row(args, workdir, info, kind, stream)
                    print(f"{name:22} bare {r['rps']['bare']:7.0f} req/s,"
                          f" relaygate {r['rps']['relaygate']:7.0f} req/s, ratio per round"
                          f" {[round(x, 3) for x in r['ratios']]}, median {r['ratio']:.3f},"
                          f" errors {r['errors']}", flush=True)  # fmt: skip
        finally:
            stack.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "responses.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
