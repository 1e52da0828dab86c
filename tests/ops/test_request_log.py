"""The request log: one line per request (text or JSON), never a key; and the request metrics."""

from __future__ import annotations

import base64
import http.client
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relaygate.access import Access, text_line
from relaygate.metrics import Metrics
from relaygate.providers.base import TokenUsage
from relaygate.store.records import KeyRecord
from tests.support.gateway import GatewayProcess

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}
CHAT = "/v1/chat/completions"


def chat(stream: bool = False, model: str = "relaygate-simulator") -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def access_lines(logs: str) -> list[dict[str, str]]:
    """The text request log's records, each as its fields."""
    records = []
    for line in logs.splitlines():
        _, marker, rest = line.partition(" INFO relaygate.access: ")
        if marker:
            records.append(dict(part.split("=", 1) for part in shlex.split(rest)))
    return records


def json_access(logs: str) -> list[dict[str, Any]]:
    out = []
    for line in logs.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["logger"] == "relaygate.access":
                out.append(record)
    return out


def assert_no_key(logs: str, key: str) -> None:
    assert key not in logs
    assert key.removeprefix("sk-") not in logs
    for text in (key, f"Bearer {key}"):
        assert base64.b64encode(text.encode()).decode().rstrip("=") not in logs


def big_head(gateway: GatewayProcess) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("GET", "/v1/models", headers={"x-padding": "a" * 4000})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], str, str]:
    """One gateway, the requests of every case, then its logs and metrics."""
    directory = tmp_path_factory.mktemp("text")
    config = {"models": SIMULATOR, "max_request_bytes": 4096, "max_head_bytes": 1024}
    gateway = GatewayProcess(directory, config).start()
    try:
        rich = gateway.create_key("--credits", "1")
        poor = gateway.create_key("--credits", "0.000001")
        key = rich["key"]
        assert gateway.post(CHAT, chat(), key)[0] == 200
        assert gateway.post(CHAT, chat(stream=True), key)[0] == 200
        assert gateway.post(CHAT, chat(), "sk-not-a-key-0123456789")[0] == 401
        assert gateway.post(CHAT, chat(), poor["key"])[0] == 402
        assert gateway.post(CHAT, chat(model='no"such model\nx=1'), key)[0] == 404
        assert gateway.post("/v1/nowhere%0Astatus=200", {}, key)[0] == 404
        big = {**chat(), "messages": [{"role": "user", "content": "x" * 5000}]}
        assert gateway.post(CHAT, big, key)[0] == 413
        assert big_head(gateway) == 431
        status, _, metrics = gateway.operator_get("/metrics")
        assert status == 200
    finally:
        gateway.stop()
    return gateway.logs(), rich, poor["key"], metrics.decode()


def test_a_line_per_request_with_what_it_did(text_run: tuple[str, Any, str, str]) -> None:
    logs, key, _, _ = text_run
    records = [r for r in access_lines(logs) if r.get("path") != "/v1/credits"]
    by_status: dict[str, list[dict[str, str]]] = {}
    for record in records:
        by_status.setdefault(record["status"], []).append(record)
    plain, streamed = sorted(by_status["200"], key=lambda r: r["stream"])
    for record, stream in ((plain, "false"), (streamed, "true")):
        assert record["request_id"].startswith("chatcmpl-")
        assert record["key_id"] == key["id"]
        assert record["account_id"].startswith("acct_")
        assert record["model"] == "relaygate-simulator"
        assert record["upstream"] == "simulator"
        assert record["outcome"] == "ok"
        assert record["stream"] == stream
        assert int(record["input_tokens"]) > 0
        assert int(record["output_tokens"]) > 0
        assert int(record["cost_micros"]) > 0
        assert int(record["latency_us"]) >= 0
        assert "upstream_us" in record
    assert "ttft_us" in streamed
    assert "ttft_us" not in plain


def test_errors_are_logged_with_their_type(text_run: tuple[str, Any, str, str]) -> None:
    logs, key, _, _ = text_run
    # (creating a key polls /v1/credits until the gateway knows it: 401s, then 200)
    records = [r for r in access_lines(logs) if r.get("path") != "/v1/credits"]
    (unauthorized,) = [r for r in records if r["status"] == "401"]
    assert unauthorized["error"] == "authentication_error"
    assert "key_id" not in unauthorized
    assert "request_id" not in unauthorized
    (poor,) = [r for r in records if r["status"] == "402"]
    assert poor["error"] == "insufficient_quota_error"
    assert poor["model"] == "relaygate-simulator"
    assert poor["key_id"] != key["id"]
    missing_model, missing_route = sorted(
        (r for r in records if r["status"] == "404"), key=lambda r: r["path"]
    )
    assert missing_model["model"] == 'no"such model\\nx=1'  # escaped: one line, one field
    assert missing_route["path"] == "/v1/nowhere\\nstatus=200"
    assert missing_route["error"] == "not_found_error"
    (large,) = [r for r in records if r["status"] == "413"]
    assert large["key_id"] == key["id"]
    (head,) = [r for r in records if r["status"] == "431"]
    assert head["error"] == "request_too_large_error"


def test_probes_and_scrapes_are_not_logged(text_run: tuple[str, Any, str, str]) -> None:
    records = access_lines(text_run[0])
    assert records
    assert not [r for r in records if r.get("path") in ("/health", "/metrics")]


def test_no_key_in_the_log(text_run: tuple[str, Any, str, str]) -> None:
    logs, key, poor, _ = text_run
    assert_no_key(logs, key["key"])
    assert_no_key(logs, poor)


def test_request_metrics(text_run: tuple[str, Any, str, str]) -> None:
    metrics = text_run[3]
    route = 'model="relaygate-simulator",upstream="simulator"'
    assert f"relaygate_request_duration_seconds_count{{{route}}} 2.0" in metrics
    assert f"relaygate_upstream_latency_seconds_count{{{route}}} 2.0" in metrics
    assert f"relaygate_time_to_first_token_seconds_count{{{route}}} 1.0" in metrics
    assert f'relaygate_tokens_total{{kind="output",{route}}}' in metrics
    assert f"relaygate_cost_micros_total{{{route}}}" in metrics
    # the 402 is timed under its model; the 401 and the unknown route under no model
    assert 'relaygate_request_duration_seconds_count{model="relaygate-simulator",upstream=""}' in (
        metrics
    )
    assert 'relaygate_request_duration_seconds_count{model="",upstream=""}' in metrics
    assert "_created" not in metrics


def test_json_lines(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"models": SIMULATOR, "log_format": "json"}).start()
    try:
        key = gateway.create_key("--credits", "1")
        assert gateway.post(CHAT, chat(), key["key"])[0] == 200
        assert gateway.post(CHAT, chat(stream=True), key["key"])[0] == 200
        assert gateway.post(CHAT, chat(), "sk-not-a-key-0123456789")[0] == 401
    finally:
        gateway.stop()
    logs = gateway.logs()
    assert_no_key(logs, key["key"])
    lines = [line for line in logs.splitlines() if not line.startswith("relaygate: ")]
    assert lines
    assert all(json.loads(line) for line in lines)
    records = [r for r in json_access(logs) if r.get("path") == CHAT]
    plain, streamed, refused = sorted(records, key=lambda r: (r["status"], r.get("stream")))
    assert plain["stream"] is False
    assert streamed["stream"] is True
    for record in (plain, streamed):
        assert record["message"] == "request"
        assert record["level"] == "INFO"
        assert record["key_id"] == key["id"]
        assert record["status"] == 200
        assert record["model"] == "relaygate-simulator"
        assert record["outcome"] == "ok"
        assert record["cost_micros"] > 0
        assert isinstance(record["latency_us"], int)
    assert "ttft_us" in streamed
    assert refused["status"] == 401
    assert refused["error"] == "authentication_error"


def test_request_log_off(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"models": SIMULATOR, "request_log": False}).start()
    try:
        assert gateway.post(CHAT, chat(), "sk-not-a-key-0123456789")[0] == 401
        _status, _, metrics = gateway.operator_get("/metrics")
    finally:
        gateway.stop()
    assert "relaygate.access" not in gateway.logs()
    assert b'relaygate_request_duration_seconds_count{model="",upstream=""} 1.0' in metrics


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("gpt-4o", "gpt-4o", id="plain"),
        pytest.param("a b", '"a b"', id="space"),
        pytest.param('x" status=200', '"x\\" status=200"', id="quote"),
        pytest.param("a\nb\r\u2028", '"a\\nb\\r\\x2028"', id="newlines"),
        pytest.param("back\\slash", '"back\\\\slash"', id="backslash"),
        pytest.param("", '""', id="empty"),
    ],
)
def test_values_cannot_forge_fields_or_lines(value: str, shown: str) -> None:
    line = text_line({"model": value, "status": 200})
    assert line == f"model={shown} status=200"
    assert "\n" not in line
    assert "\r" not in line
    assert dict(part.split("=", 1) for part in shlex.split(line))["status"] == "200"


def test_histogram_buckets_and_totals_are_published_when_read() -> None:
    metrics = Metrics()
    for seconds, cost in ((0.008, 5), (0.3, 7), (400.0, 0)):
        access = Access("POST", CHAT)
        access.model, access.model_known, access.upstream = "m", True, "u"
        access.cost, access.input_tokens, access.output_tokens = cost, 3, 4
        metrics.request_done(access, access.started + seconds)
    text = metrics.render().decode()
    route = 'model="m",upstream="u"'
    # "le" buckets, cumulative: 0.008 s from the 0.01 bucket on, 400 s only in +Inf
    assert f'relaygate_request_duration_seconds_bucket{{le="0.01",{route}}} 1.0' in text
    assert f'relaygate_request_duration_seconds_bucket{{le="0.25",{route}}} 1.0' in text
    assert f'relaygate_request_duration_seconds_bucket{{le="0.5",{route}}} 2.0' in text
    assert f'relaygate_request_duration_seconds_bucket{{le="300.0",{route}}} 2.0' in text
    assert f'relaygate_request_duration_seconds_bucket{{le="+Inf",{route}}} 3.0' in text
    assert f"relaygate_request_duration_seconds_count{{{route}}} 3.0" in text
    assert f"relaygate_cost_micros_total{{{route}}} 12.0" in text
    assert f'relaygate_tokens_total{{kind="output",{route}}} 12.0' in text
    assert "_created" not in text
    assert metrics.render().decode() == text  # published once: a second read adds nothing


def settled_access(
    *,
    stream: bool = False,
    account: str = "acct_1",
    upstream: str = "openai",
    answered: bool = True,
    error: str | None = None,
) -> Access:
    """A record filled as the pipeline and settlement fill it."""
    access = Access("POST", CHAT)
    access.key = KeyRecord(
        id="key_1", name="k", key_hash="h", prefix="p", created_at=0, account_id=account
    )
    access.model, access.model_known, access.stream = "gpt-x", True, stream
    access.upstream_called = access.started + 0.001
    if answered:
        access.upstream_answered = access.started + 0.0123456
    if stream:
        access.first_token = access.started + 0.02
    access.error = error
    ticket: Any = SimpleNamespace(request_id="chatcmpl-1", model=SimpleNamespace(name="gpt-x"))
    usage = TokenUsage(
        prompt_tokens=7, completion_tokens=24, cached_tokens=2, reasoning_tokens=3,
        cache_write_tokens=1, cache_write_1h_tokens=1,
    )  # fmt: skip
    access.settled(ticket, usage, 11, "ok" if error is None else "upstream_error", upstream)
    return access


def unsettled_access() -> Access:
    access = Access("POST", "/v1/no where")
    access.model, access.error = 'no"such', "not_found_error"
    return access


@pytest.mark.parametrize(
    "access",
    [
        pytest.param(settled_access(), id="settled"),
        pytest.param(settled_access(stream=True), id="streamed"),
        pytest.param(settled_access(account=""), id="no-account"),
        pytest.param(settled_access(upstream="my upstream"), id="quoted-upstream"),
        pytest.param(settled_access(upstream=""), id="no-upstream"),
        pytest.param(settled_access(answered=False, error="upstream_error"), id="no-answer"),
        pytest.param(settled_access(stream=True, error="upstream_error"), id="stream-error"),
        pytest.param(unsettled_access(), id="unsettled"),
        pytest.param(Access("GET", "/v1/models"), id="bare"),
    ],
)
def test_a_line_is_its_fields_written_as_text(access: Access) -> None:
    """The line a request's record writes directly (a settled request's in one f-string) is
    what the generic writer makes of its fields, which the JSON format carries."""
    ended = access.started + 0.5
    line = access.line(200, ended)
    assert line == text_line(access.fields(200, ended))
    assert access.line(200, ended) == line  # the second time from what was remembered


def test_responses_and_upstream_answers_are_published_when_read() -> None:
    metrics = Metrics()
    metrics.responded(200)
    metrics.responded(200)
    metrics.responded(404, "not_found_error")
    metrics.upstream_answered("m", "u")
    metrics.upstream_answered("m", "u")
    metrics.upstream_answered("m", "v")
    text = metrics.render().decode()
    assert 'relaygate_responses_total{status="200",type=""} 2.0' in text
    assert 'relaygate_responses_total{status="404",type="not_found_error"} 1.0' in text
    assert 'relaygate_upstream_answers_total{model="m",upstream="u"} 2.0' in text
    assert 'relaygate_upstream_answers_total{model="m",upstream="v"} 1.0' in text
    assert metrics.render().decode() == text  # published once: a second read adds nothing
    metrics.responded(200)
    assert 'relaygate_responses_total{status="200",type=""} 3.0' in metrics.render().decode()
