"""Random request bodies never make the gateway answer 500 (issue 11, item 6): a seeded,
reproducible generator of bodies, valid in shape and hostile in content."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from typing import Any

from tests.support.gateway import GatewayProcess

FIELDS = [
    "model", "messages", "stream", "temperature", "top_p", "top_k", "max_tokens",
    "max_completion_tokens", "n", "stop", "stream_options", "presence_penalty",
    "frequency_penalty", "seed", "tools", "tool_choice", "response_format", "reasoning_effort",
    "user", "models", "logit_bias", "logprobs", "top_logprobs", "metadata", "service_tier",
    "store", "modalities", "audio", "prediction", "web_search_options", "x_vendor",
]
MODELS = ["gpt-5.5", "gpt-5.2", "relaygate-simulator", "text-only", "unrouted", "nope"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2, 129, 10**30, -(10**30), 2**63])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, -1e308, 2.5])
    if kind == 4:
        return rng.choice(["", "a" * rng.randrange(1, 3000), "\u0000\n\"'", "é" * 50, "auto"])
    if kind == 5:
        return f"@DEEP{rng.choice([10, 63, 64, 65, 200, 1000, 3000])}@"  # see deepen()
    if kind == 6:
        return ["s"] * rng.choice([0, 1, 4, 5, 300, 5000])
    if kind == 7:
        return {str(i): rng.choice([1, 200, "x"]) for i in range(rng.choice([0, 3, 301]))}
    if kind in (8, 9):
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice([*FIELDS, "role", "content", "type", "text", "image_url", "url"]):
            value(rng, depth + 1) for _ in range(rng.randrange(4))}


def deepen(text: str) -> str:
    """Replace each ``"@DEEPn@"`` placeholder with arrays nested ``n`` deep."""
    parts = text.split('"@DEEP')
    out = [parts[0]]
    for part in parts[1:]:
        depth, _, rest = part.partition('@"')
        out.append("[" * int(depth) + "]" * int(depth) + rest)
    return "".join(out)


def message(rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return value(rng, 1)
    role = rng.choice(["user", "system", "assistant", "tool", "developer", "bot"])
    content: Any = rng.choice([
        "hi", None, [], [{"type": "text", "text": "x"}],
        [{"type": "image_url", "image_url": {"url": rng.choice(["", "data:", "ftp://x"])}}],
        value(rng, 2),
    ])
    found: dict[str, Any] = {"role": role, "content": content}
    if rng.random() < 0.3:
        found["tool_calls"] = [{"id": "c", "type": "function", "function": {
            "name": "f", "arguments": rng.choice(["{}", "[" * 3000, "{\"a\":1}", "x"])}}]
    if rng.random() < 0.2:
        found["tool_call_id"] = value(rng, 2)
    return found


def request_body(rng: random.Random) -> bytes:
    body: dict[str, Any] = {"model": rng.choice(MODELS), "messages": [message(rng)]}
    for _ in range(rng.randrange(5)):
        body[rng.choice(FIELDS)] = value(rng)
    if rng.random() < 0.5:
        body["max_tokens"] = 16
    data = deepen(json.dumps(body)).encode()
    if rng.random() < 0.1:
        cut = rng.randrange(len(data))
        data = data[:cut] + bytes([rng.randrange(256)]) + data[cut + 1:]
    return data


def post(gateway: GatewayProcess, data: bytes, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions", data=data, method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_random_bodies_never_get_a_500(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1000")["key"]
    rng = random.Random(20261130)
    statuses: dict[int, int] = {}
    for i in range(300):
        data = request_body(rng)
        status, answer = post(gateway, data, key)
        statuses[status] = statuses.get(status, 0) + 1
        assert status != 500, (i, data[:300], answer[:300])
    assert statuses.get(400, 0) > 50, statuses
    assert statuses.get(200, 0) > 5, statuses
    assert "Traceback" not in gateway.logs()
