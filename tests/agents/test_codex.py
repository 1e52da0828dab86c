"""Codex CLI (npm ``@openai/codex``) through relaygate: ``codex exec`` with a model provider
whose ``base_url`` is relaygate and ``wire_api = "responses"``, offline against loopback.

Codex completes a prompt, and a turn in which the (fake) upstream asks for a shell command,
Codex runs it and sends its output back: once with a chat-completions upstream (translated) and
once with one that speaks Responses (passed through).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import catalog
from tests.support.agents import command
from tests.support.fake_openai import Behavior
from tests.support.fake_responses import FakeResponses
from tests.support.gateway import GatewayProcess, ledger

UPSTREAMS = {
    "translated": {},
    "passed-through": {"options": {"responses": True}},
}


@pytest.fixture
def upstream() -> Iterator[FakeResponses]:
    fake = FakeResponses(default=Behavior())
    fake.start()
    yield fake
    fake.stop()


def codex_home(directory: Path, gateway: GatewayProcess) -> Path:
    home = directory / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "codex-test"\n'
        'model_provider = "relaygate"\n'
        'web_search = "disabled"\n'
        "[model_providers.relaygate]\n"
        'name = "relaygate"\n'
        f'base_url = "{gateway.url}/v1"\n'
        'env_key = "RELAYGATE_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    return home


def codex_exec(
    home: Path, key: str, workdir: Path, prompt: str
) -> subprocess.CompletedProcess[str]:
    # its own HOME too: Codex writes helper files under ~/.codex whatever CODEX_HOME says
    env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(home.parent),
           "RELAYGATE_API_KEY": key}  # fmt: skip
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [str(command("codex")), "exec", "--skip-git-repo-check", "--sandbox", "danger-full-access",
         "--cd", str(workdir), prompt],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("route", UPSTREAMS)
def test_codex_exec_completes_a_prompt_and_a_shell_command_turn(
    tmp_path: Path, upstream: FakeResponses, route: str
) -> None:
    command("codex")
    settings = catalog(upstream.base_url)
    settings["models"]["codex-test"] = {
        "pricing": {"input": "1", "output": "4"},
        "max_output_tokens": 32000,
        "upstreams": [{"provider": "openai", "base_url": upstream.base_url,
                       "api_key": "sk-upstream-SECRET-0123456789", **UPSTREAMS[route]}],
    }  # fmt: skip
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", settings).start()
    try:
        key = gateway.create_key("--credits", "10")
        home = codex_home(tmp_path, gateway)
        work = tmp_path / "work"
        work.mkdir()

        upstream.script = [Behavior(text="Hello from relaygate.")]
        done = codex_exec(home, key["key"], work, "Say hello")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Hello from relaygate." in done.stdout + done.stderr

        shell = {"id": "call_shell1", "type": "function",
                 "function": {"name": "exec_command",
                              "arguments": json.dumps({"cmd": "echo relaygate-$((6*7))"})}}
        upstream.script = [
            Behavior(text="", tool_call=shell, finish_reason="tool_calls"),
            Behavior(text="The command printed relaygate-42."),
        ]  # fmt: skip
        done = codex_exec(home, key["key"], work, "Run the command")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "The command printed relaygate-42." in done.stdout + done.stderr
        last = upstream.received[-1]
        assert tool_output(last.body, route) is not None
        assert "relaygate-42" in str(tool_output(last.body, route))
        gateway.wait_until(lambda: len(ledger(gateway, key["id"])) == 3, message="3 rows")
        assert all(row["status"] == "ok" for row in ledger(gateway, key["id"]))
    finally:
        gateway.stop()


def tool_output(body: dict[str, Any], route: str) -> Any:
    """The shell command's output as the upstream received it (a tool message, or a
    ``function_call_output`` item)."""
    if route == "translated":
        tools = [m for m in body["messages"] if m["role"] == "tool"]
        return tools[-1]["content"] if tools else None
    outputs = [i for i in body["input"] if i.get("type") == "function_call_output"]
    return outputs[-1]["output"] if outputs else None
