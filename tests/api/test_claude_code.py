"""Claude Code (npm ``@anthropic-ai/claude-code``) through relaygate, offline on loopback.

``claude -p`` runs with ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_AUTH_TOKEN`` pointed at a real
relaygate with a relaygate key. It completes a prompt, and a turn that uses a tool (reading a
file), once in front of an Anthropic-style upstream (the body passes through) and once in front
of an OpenAI-compatible one (translated); the scripted upstreams are in
:mod:`tests.support.fake_agents`. The CLI is found at ``$RELAYGATE_CLAUDE``, then under
``.ci/node`` (where ``.ci/run`` installs it), then on ``PATH``; without it the tests skip,
unless ``RELAYGATE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.providers.fake_anthropic import API_KEY
from tests.providers.server import ThreadedServer
from tests.support.fake_agents import OPENAI_KEY, AgentAnthropic, AgentOpenAI
from tests.support.gateway import GatewayProcess, ledger
from tests.support.services import REQUIRE

ROOT = Path(__file__).resolve().parents[2]
MODEL = "claude-sonnet-4-6"


def claude_cli() -> str:
    for candidate in (
        os.environ.get("RELAYGATE_CLAUDE"),
        str(ROOT / ".ci" / "node" / "node_modules" / ".bin" / "claude"),
        shutil.which("claude"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    reason = "Claude Code is not installed (see the README's agent section)"
    if REQUIRE:
        pytest.fail(f"{reason}; RELAYGATE_REQUIRE_SERVICES=1 makes it mandatory")
    pytest.skip(reason)


@pytest.fixture(params=["anthropic", "openai"])
def agent_upstream(request: pytest.FixtureRequest) -> Iterator[tuple[str, ThreadedServer[Any]]]:
    fake: ThreadedServer[Any] = AgentAnthropic() if request.param == "anthropic" else AgentOpenAI()
    fake.start()
    yield request.param, fake
    fake.stop()


def run_claude(cli: str, gateway: GatewayProcess, key: str, work: Path, prompt: str) -> str:
    home = work.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [cli, "-p", prompt, "--allowedTools", "Read", "--output-format", "text"],
        cwd=work, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], gateway.logs()[-3000:])
    return done.stdout


def test_claude_code_completes_a_prompt_and_a_tool_turn(
    tmp_path: Path, agent_upstream: tuple[str, ThreadedServer[Any]]
) -> None:
    cli = claude_cli()
    kind, fake = agent_upstream
    if kind == "anthropic":
        upstream = {"provider": "anthropic", "base_url": fake.root, "api_key": API_KEY}
    else:
        upstream = {"provider": "openai", "base_url": fake.root + "/v1", "api_key": OPENAI_KEY}
    model = {"pricing": {"input": "3", "cached_input": "0.3", "output": "15"},
             "max_output_tokens": 64000, "vision": True, "upstreams": [upstream]}  # fmt: skip
    directory = tmp_path / "gw"
    directory.mkdir()
    gateway = GatewayProcess(directory, {"models": {MODEL: model}, "ledger_flush_seconds": 0.05})
    gateway.start()
    try:
        created = gateway.create_key("--credits", "10")
        work = tmp_path / "work"
        work.mkdir()
        secret = work / "secret.txt"
        secret.write_text("the magic word is PAPAYA\n")

        assert run_claude(cli, gateway, created["key"], work, "Say pong.").strip() == "pong"
        answer = run_claude(
            cli, gateway, created["key"], work, f"READFILE:{secret} What is the magic word?"
        )
        assert "PAPAYA" in answer  # the model saw the file that Claude Code's Read tool read
        bodies = [r.body for r in fake.received]
        if kind == "anthropic":
            # passed through: Claude Code's own body, its beta header kept
            assert any("tool_result" in str(b["messages"][-1]) for b in bodies)
            assert all("claude-code" in r.headers.get("anthropic-beta", "") for r in fake.received)
        else:
            assert any(b["messages"][-1]["role"] == "tool" for b in bodies)
        gateway.wait_until(lambda: len(ledger(gateway, created["id"])) >= len(bodies))
        rows = ledger(gateway, created["id"])
        assert {row["api"] for row in rows} == {"messages"}
        assert all(row["status"] == "ok" and row["cost_micros"] > 0 for row in rows)
    finally:
        gateway.stop()
