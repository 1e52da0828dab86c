"""The Vercel AI SDK's default ``openai(...)`` provider (npm ``ai`` + ``@ai-sdk/openai``, which
calls ``POST /v1/responses``) against relaygate: ``tests/agents/vercel_ai.cjs`` run with node."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import catalog
from tests.support.agents import TOOLS, node_package
from tests.support.fake_openai import Behavior
from tests.support.fake_responses import FakeResponses
from tests.support.gateway import GatewayProcess

SCRIPT = Path(__file__).with_name("vercel_ai.cjs")
WEATHER = {"id": "call_w1", "type": "function",
           "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip


@pytest.fixture
def upstream() -> Iterator[FakeResponses]:
    fake = FakeResponses(default=Behavior())
    fake.start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("model", ["gpt-5.2", "gpt-native"])
def test_the_default_openai_provider_works(
    tmp_path: Path, upstream: FakeResponses, model: str
) -> None:
    node_package("ai")
    node_package("@ai-sdk/openai")
    settings = catalog(upstream.base_url)
    settings["models"]["gpt-native"] = {
        "pricing": {"input": "1", "output": "4"},
        "upstreams": [{"provider": "openai", "base_url": upstream.base_url,
                       "api_key": "sk-upstream-SECRET-0123456789",
                       "options": {"responses": True}}],
    }  # fmt: skip
    gateway = GatewayProcess(tmp_path, settings).start()
    try:
        key = gateway.create_key("--credits", "10")
        upstream.script = [
            Behavior(text="Hello there.", prompt_tokens=9, completion_tokens=3),
            Behavior(text="Streamed hello.", chunks=3),
            Behavior(text="", tool_call=WEATHER, finish_reason="tool_calls"),
            Behavior(text="It is sunny in Paris."),
        ]
        env = {**os.environ, "NODE_PATH": str(TOOLS / "node_modules"),
               "OPENAI_BASE_URL": gateway.url + "/v1", "OPENAI_API_KEY": key["key"],
               "RELAYGATE_MODEL": model}  # fmt: skip
        done = subprocess.run(
            ["node", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        gateway.stop()
    assert result["text"] == "Hello there."
    assert result["usage"]["inputTokens"] == 9
    assert result["usage"]["outputTokens"] == 3
    assert result["streamed"] == "Streamed hello."
    assert result["toolResults"] == ["sunny in Paris"]
    assert result["toolText"] == "It is sunny in Paris."
    assert result["steps"] == 2
    assert all(r.path.endswith("/chat/completions" if model == "gpt-5.2" else "/responses")
               for r in upstream.received)  # fmt: skip
