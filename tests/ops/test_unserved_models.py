"""Models no upstream serves (issue 15, item 7): a start-up warning names them, and
``/v1/models`` leaves them out (the OpenAI SDK lists what remains)."""

from __future__ import annotations

from pathlib import Path

import openai

from tests.support.gateway import GatewayProcess

MODELS = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    },
    # as the built-in catalog's gpt-5.2 without OPENAI_API_KEY
    "gpt-5.2": {"pricing": {"input": "1.75", "output": "14"}, "upstreams": []},
    # no upstream of its own, but a fallback that has one: it serves
    "alias": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [],
        "fallbacks": ["relaygate-simulator"],
    },
}


def test_models_without_an_upstream_are_named_at_start_and_not_listed(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"models": MODELS}).start()
    try:
        key = gateway.create_key("--credits", "1")["key"]
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        assert sorted(m.id for m in client.models.list()) == ["alias", "relaygate-simulator"]
        status, _, answer = gateway.post(
            "/v1/chat/completions",
            {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]},
            key=key,
        )
        assert status == 503
        assert "no upstream configured" in answer["error"]["message"]
        assert (
            gateway.post(
                "/v1/chat/completions",
                {"model": "alias", "messages": [{"role": "user", "content": "hi"}]},
                key=key,
            )[0]
            == 200
        )
    finally:
        gateway.stop()
    logs = gateway.logs()
    banner = next(line for line in logs.splitlines() if line.startswith("relaygate: serving"))
    assert banner.endswith("models: alias, gpt-5.2 (no upstream), relaygate-simulator")
    warnings = [line for line in logs.splitlines() if " WARNING relaygate: no upstream " in line]
    assert len(warnings) == 1, logs
    assert "serves gpt-5.2: " in warnings[0]
    assert "alias" not in warnings[0]
