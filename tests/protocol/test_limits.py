"""What a client controls is bounded before it costs CPU (issue 11, item 6): nesting depth,
model-name length, the counts OpenAI documents, and how much of a client's value an error
quotes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relaygate.errors import InvalidRequest, excerpt
from relaygate.protocol.types import MAX_LOGIT_BIAS, MAX_MODEL_NAME, MAX_STOP, MAX_TOOLS
from relaygate.protocol.validate import MAX_DEPTH, decode_chat_request, decode_json
from relaygate.providers.http import tool_arguments
from tests.support.gateway import GatewayProcess

USER: dict[str, Any] = {"role": "user", "content": "hi"}
TOOL: dict[str, Any] = {"type": "function", "function": {"name": "f", "parameters": {}}}


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "gpt-5.5", "messages": [USER], **fields}).encode()


def nested(depth: int, field: str = "metadata") -> bytes:
    """A valid request whose ``field`` is ``depth`` arrays deep (the body itself is one more)."""
    head = json.dumps({"model": "gpt-5.5", "messages": [USER]})[:-1]
    return f'{head}, "{field}": {"[" * depth}{"]" * depth}}}'.encode()


def rejected(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode_chat_request(raw)
    assert info.value.status == 400
    return info.value


# --- depth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["metadata", "tools", "response_format", "x_vendor"])
@pytest.mark.parametrize("depth", [MAX_DEPTH, 100, 1000, 100_000])
def test_deep_json_is_a_400_naming_the_field(field: str, depth: int) -> None:
    raw = nested(depth, field)
    error = rejected(raw)
    assert error.param == field
    assert "nested too deeply" in error.message


def test_deep_json_of_2_kb_is_a_400() -> None:
    raw = nested(1000)
    assert len(raw) < 2200
    assert rejected(raw).param == "metadata"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    request, _raw = decode_chat_request(nested(MAX_DEPTH - 1))
    assert request.model == "gpt-5.5"


def test_deep_objects_inside_a_tool_schema() -> None:
    schema: Any = {"type": "string"}
    for _ in range(80):
        schema = {"type": "object", "properties": {"a": schema}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    assert rejected(body(tools=[tool])).param == "tools"


def test_deep_tool_call_arguments_are_a_400() -> None:
    arguments = "[" * 5000 + "]" * 5000
    with pytest.raises(InvalidRequest) as info:
        tool_arguments(arguments, "messages[1].tool_calls[0].function.arguments")
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(InvalidRequest):
        decode_json('{"a":' * 70 + "1" + "}" * 70, "x")


# --- lengths and counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        pytest.param({"model": "m" * (MAX_MODEL_NAME + 1)}, "model", id="model"),
        pytest.param({"models": ["m" * (MAX_MODEL_NAME + 1)]}, "models[0]", id="models"),
        pytest.param({"stop": ["s"] * (MAX_STOP + 1)}, "stop", id="stop"),
        pytest.param({"n": 129}, "n", id="n"),
        pytest.param({"tools": [TOOL] * (MAX_TOOLS + 1)}, "tools", id="tools"),
        pytest.param(
            {"logit_bias": {str(i): 1 for i in range(MAX_LOGIT_BIAS + 1)}}, "logit_bias",
            id="logit_bias",
        ),
        pytest.param({"logit_bias": {"50256": 101}}, "logit_bias[...]", id="logit_bias-value"),
        pytest.param({"top_logprobs": 21}, "top_logprobs", id="top_logprobs"),
    ],
)
def test_counts_past_openais_limits_are_400s(fields: dict[str, Any], param: str) -> None:
    error = rejected(body(**fields))
    assert error.param == param
    assert len(error.message) < 300


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"model": "m" * MAX_MODEL_NAME}, id="model"),
        pytest.param({"stop": ["s"] * MAX_STOP}, id="stop"),
        pytest.param({"tools": [TOOL] * MAX_TOOLS}, id="tools"),
        pytest.param({"logit_bias": {str(i): -100 for i in range(MAX_LOGIT_BIAS)}}, id="bias"),
    ],
)
def test_counts_at_openais_limits_are_accepted(fields: dict[str, Any]) -> None:
    decode_chat_request(body(**fields))


def test_an_invalid_enum_value_is_quoted_as_an_excerpt() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "x" * 10**6}}
    error = rejected(body(messages=[{"role": "user", "content": [part]}]))
    assert len(error.message) < 250
    assert "(999936 more characters)" in error.message
    error = rejected(body(messages=[{"role": "q" * 5000, "content": "x"}]))
    assert error.param == "messages[0].role"
    assert len(error.message) < 250


def test_excerpt_is_short_quoted_and_escaped() -> None:
    assert excerpt("gpt-5") == "'gpt-5'"
    cut = excerpt("a\nb" * 1000)
    assert "\n" not in cut
    assert len(cut) < 120
    assert cut.endswith("(2936 more characters)")


# --- through the gateway -------------------------------------------------------------------


def test_a_15_mb_model_name_is_a_short_400(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1")["key"]
    status, _, answer = gateway.post(
        "/v1/chat/completions", {"model": "q" * 15_000_000, "messages": [USER]}, key
    )
    assert status == 400, str(answer)[:300]
    assert answer["error"]["param"] == "model"
    assert len(json.dumps(answer)) < 500
    assert gateway.get("/health")[0] == 200


def test_unknown_model_404_quotes_an_excerpt(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1")["key"]
    name = "gpt-5.5" + "z" * (MAX_MODEL_NAME - 7)
    sent = {"model": name, "messages": [USER]}
    status, _, answer = gateway.post("/v1/chat/completions", sent, key)
    assert status == 404
    assert answer["error"]["fallback_suggestion"] == "gpt-5.5"
    assert len(answer["error"]["message"]) < 150


def test_deep_json_through_the_gateway_is_a_400(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1")["key"]
    for field in ("metadata", "tools", "response_format"):
        status, raw = _post_raw(gateway, nested(1000, field), key)
        assert status == 400, raw[:300]
        assert json.loads(raw)["error"]["param"] == field
    assert "Traceback" not in gateway.logs()


def _post_raw(gateway: GatewayProcess, data: bytes, key: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions", data=data, method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_large_body_is_walked_for_depth() -> None:
    # Past 64 KiB the bracket count is skipped: a deep field after a long text is still found.
    pad = json.dumps({"role": "user", "content": "x" * 100_000})
    head = json.dumps({"model": "gpt-5.5", "messages": [USER]})[:-2]
    raw = f'{head}, {pad}], "metadata": {"[" * 100}{"]" * 100}}}'.encode()
    assert len(raw) > 64 * 1024
    assert rejected(raw).param == "metadata"
