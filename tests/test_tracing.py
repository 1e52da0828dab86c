"""OpenTelemetry traces (``otel``), exported to a real OTLP/HTTP receiver on loopback that
decodes the protobuf it gets: span names, parents, kinds and attributes, for an answer, a
stream, a fallback, an image request and the errors; the extra missing; tracing off."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed (.[otel])")
pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http", reason="the otel extra is not installed (.[otel])"
)

from relaygate.errors import ConfigError
from relaygate.redaction import configured_secrets
from relaygate.settings import OtelSettings, settings_from_mapping
from relaygate.tracing import MISSING_EXTRA, Tracing
from tests.conftest import catalog
from tests.media.samples import png
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, ledger
from tests.support.otlp import OtlpReceiver, ReceivedSpan

CHAT = "/v1/chat/completions"
PROMPT = "a prompt that must never reach a span"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"


@pytest.fixture
def receiver() -> Any:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


class Traced:
    """A W3C ``traceparent`` of our own per request: its trace id finds the request's spans."""

    def __init__(self, sampled: bool = True) -> None:
        self.trace_id = os.urandom(16).hex()
        self.parent_id = os.urandom(8).hex()
        self.header = f"00-{self.trace_id}-{self.parent_id}-{'01' if sampled else '00'}"


def post(
    gateway: GatewayProcess, body: dict[str, Any], key: str, traced: Traced | None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        gateway.url + CHAT, data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("content-type", "application/json")
    request.add_header("authorization", f"Bearer {key}")
    if traced is not None:
        request.add_header("traceparent", traced.header)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **fields}


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def server_span(spans: list[ReceivedSpan], traced: Traced) -> ReceivedSpan:
    servers = [span for span in spans if span.kind == "SPAN_KIND_SERVER"]
    assert len(servers) == 1, [(span.name, span.kind) for span in spans]
    server = servers[0]
    assert server.parent_id == traced.parent_id  # the caller's traceparent is honoured
    assert server.scope == "relaygate"
    for span in spans:
        if span is not server:
            assert span.parent_id == server.span_id, span.name
    return server


def test_requests_are_traced_with_genai_attributes(
    tmp_path: Path, upstream: FakeOpenAI, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")  # exported at shutdown only
    config = catalog(
        upstream.base_url,
        otel={
            "enabled": True,
            "endpoint": receiver.endpoint,
            "headers": {"authorization": "Bearer collector-token"},
            "service_name": "relaygate-test",
            "sample_ratio": 0,  # only requests whose caller sampled them are traced
        },
    )
    fake = {"provider": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}
    config["models"]["flaky"] = {
        "pricing": {"input": "1", "output": "1"},
        "upstreams": [{**fake, "name": "flaky-openai", "model": "flaky-upstream", "retries": 0}],
        "fallbacks": ["gpt-5.5"],
    }
    config["models"]["retrying"] = {
        "pricing": {"input": "1", "output": "1"},
        "upstreams": [{**fake, "name": "retrying-openai", "retries": 1}],
    }
    (tmp_path / "gw").mkdir()
    gateway = GatewayProcess(tmp_path / "gw", config).start()
    try:
        key = gateway.create_key("--credits", "5")
        poor = gateway.create_key("--credits", "0.0001")
        modest = gateway.create_key("--credits", "0.01")
        answer, stream, fallback, image, missing, refused, retried, cut, clamped = (
            Traced() for _ in range(9)
        )
        unsampled = Traced(sampled=False)
        status, headers, _ = post(gateway, chat("gpt-5.2", max_tokens=100), key["key"], answer)
        assert status == 200
        request_id = headers["x-request-id"]
        options = {"stream": True, "stream_options": {"include_usage": True}}
        upstream.script = [Behavior(cached_tokens=4, reasoning_tokens=3)]
        assert post(gateway, chat("gpt-5.2", **options), key["key"], stream)[0] == 200
        upstream.script = [Behavior(status=500)]
        status, headers, _ = post(gateway, chat("flaky"), key["key"], fallback)
        assert (status, headers["x-relaygate-model"]) == (200, "gpt-5.5")
        data = base64.b64encode(png(4, 4)).decode()
        parts = [{"type": "text", "text": PROMPT},
                 {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
        body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": parts}]}
        assert post(gateway, body, key["key"], image)[0] == 200
        assert post(gateway, chat("no-such-model"), key["key"], missing)[0] == 404
        upstream.script = [Behavior(status=503)]
        assert post(gateway, chat("retrying"), key["key"], retried)[0] == 200
        upstream.script = [Behavior(cut_after=2)]
        assert post(gateway, chat("gpt-5.2", stream=True), key["key"], cut)[0] == 200
        assert post(gateway, chat("gpt-5.2", max_tokens=100_000), poor["key"], refused)[0] == 402
        assert post(gateway, chat("gpt-5.2"), modest["key"], clamped)[0] == 200
        assert post(gateway, chat("gpt-5.2"), key["key"], unsampled)[0] == 200
        assert post(gateway, chat("gpt-5.2"), key["key"], None)[0] == 200  # ratio 0
        garbled = Traced()
        garbled.header = "00-not-a-trace-01"  # as if there were none: ratio 0
        assert post(gateway, chat("gpt-5.2"), key["key"], garbled)[0] == 200
    finally:
        gateway.stop()  # the shutdown exports the spans still queued
    rows = {row["request_id"]: row for row in ledger(gateway, key["id"])}

    # Exported over OTLP/HTTP protobuf, with the configured headers and service name.
    assert receiver.posts
    assert all(p["Authorization"] == "Bearer collector-token" for p in receiver.posts)
    assert {s.resource["service.name"] for s in receiver.spans} == {"relaygate-test"}
    traced = {answer.trace_id, stream.trace_id, fallback.trace_id, image.trace_id,
              missing.trace_id, refused.trace_id, retried.trace_id, cut.trace_id,
              clamped.trace_id}
    assert {s.trace_id for s in receiver.spans} == traced  # sampled out: nothing

    # A non-streamed answer.
    spans = receiver.trace(answer.trace_id)
    server = server_span(spans, answer)
    assert server.name == "chat gpt-5.2"
    assert not server.error
    row = rows[request_id]
    assert server.attributes == {
        "gen_ai.operation.name": "chat",
        "http.request.method": "POST",
        "url.path": CHAT,
        "relaygate.key_id": key["id"],
        "relaygate.account_id": row["account_id"],
        "relaygate.api": "chat",
        "gen_ai.request.model": "gpt-5.2",
        "gen_ai.request.stream": False,
        "gen_ai.request.max_tokens": 100,
        "gen_ai.provider.name": "openai",
        "relaygate.upstream": "fake-openai",
        "gen_ai.response.id": request_id,
        "gen_ai.response.model": "gpt-5.2",
        "relaygate.status": "ok",
        "relaygate.cost_micros": row["cost_micros"],
        "gen_ai.usage.input_tokens": 13,
        "gen_ai.usage.output_tokens": 20,
        "http.response.status_code": 200,
    }
    assert row["cost_micros"] > 0
    assert row["account_id"]
    assert sorted(s.name for s in spans) == sorted([
        "chat gpt-5.2", "relaygate.admission", "chat gpt-5.2-upstream", "relaygate.settle"])
    attempt = one(spans, "chat gpt-5.2-upstream")
    assert attempt.kind == "SPAN_KIND_CLIENT"
    assert attempt.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5.2-upstream",
        "relaygate.model": "gpt-5.2",
        "relaygate.upstream": "fake-openai",
        "relaygate.attempt": 1,
        "relaygate.retry": False,
        "relaygate.fallback": False,
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": 13,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    assert one(spans, "relaygate.admission").kind == "SPAN_KIND_INTERNAL"
    assert one(spans, "relaygate.admission").attributes == {}
    assert one(spans, "relaygate.settle").kind == "SPAN_KIND_INTERNAL"

    # A stream: its attempt's span follows the answer to its end (usage, finish reason).
    spans = receiver.trace(stream.trace_id)
    server = server_span(spans, stream)
    assert server.attributes["gen_ai.request.stream"] is True
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.usage.output_tokens"] == 20
    assert server.attributes["gen_ai.usage.cache_read.input_tokens"] == 4
    assert server.attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    attempt = one(spans, "chat gpt-5.2-upstream")
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 20
    assert attempt.attributes["gen_ai.usage.cache_read.input_tokens"] == 4
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert not attempt.error
    assert attempt.end >= server.start

    # A fallback: the failed attempt and the one on the next model, both children.
    spans = receiver.trace(fallback.trace_id)
    server = server_span(spans, fallback)
    assert server.name == "chat flaky"
    assert server.attributes["gen_ai.response.model"] == "gpt-5.5"
    assert not server.error
    failed = one(spans, "chat flaky-upstream")
    assert failed.error
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500"
    assert failed.attributes["relaygate.fallback"] is False
    answered = one(spans, "chat gpt-5.5")
    assert not answered.error
    assert answered.attributes["relaygate.fallback"] is True
    assert answered.attributes["relaygate.model"] == "gpt-5.5"

    # A retry on the same upstream: two attempts, the second one a retry.
    spans = receiver.trace(retried.trace_id)
    server_span(spans, retried)
    attempts = sorted((s for s in spans if s.kind == "SPAN_KIND_CLIENT"), key=lambda s: s.start)
    assert [s.name for s in attempts] == ["chat retrying", "chat retrying"]
    assert [s.attributes["relaygate.attempt"] for s in attempts] == [1, 2]
    assert [s.attributes["relaygate.retry"] for s in attempts] == [False, True]
    assert [s.attributes["http.response.status_code"] for s in attempts] == [503, 200]
    assert [s.error for s in attempts] == [True, False]

    # A stream the upstream broke off: 200 was sent, the error is on the spans.
    spans = receiver.trace(cut.trace_id)
    server = server_span(spans, cut)
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["relaygate.status"] == "upstream_error"
    assert server.attributes["error.type"] == "upstream_error"
    assert server.error
    attempt = one(spans, "chat gpt-5.2-upstream")
    assert attempt.error
    assert attempt.attributes["error.type"] == "upstream_error"

    # An image: its span between admission and the attempt.
    spans = receiver.trace(image.trace_id)
    server_span(spans, image)
    images = one(spans, "relaygate.images")
    assert images.attributes["relaygate.image_count"] == 1
    assert images.attributes["relaygate.image_bytes"] == len(png(4, 4))

    # Admitted with the output limit the balance affords.
    spans = receiver.trace(clamped.trace_id)
    server_span(spans, clamped)
    limit = one(spans, "relaygate.admission").attributes["relaygate.output_limit"]
    assert 256 <= limit < 128_000

    # 404: decided before the model is known, so the span keeps the operation's name.
    spans = receiver.trace(missing.trace_id)
    server = server_span(spans, missing)
    assert [s.name for s in spans] == ["chat"]
    assert server.error
    assert server.attributes["http.response.status_code"] == 404
    assert server.attributes["error.type"] == "not_found_error"
    assert server.attributes["relaygate.key_id"] == key["id"]

    # 402: refused at admission, whose span carries the error too.
    spans = receiver.trace(refused.trace_id)
    server = server_span(spans, refused)
    assert sorted(s.name for s in spans) == ["chat gpt-5.2", "relaygate.admission"]
    assert server.attributes["http.response.status_code"] == 402
    assert server.attributes["error.type"] == "insufficient_quota_error"
    admission = one(spans, "relaygate.admission")
    assert admission.error
    assert admission.attributes["error.type"] == "insufficient_quota_error"

    # Never a key, a prompt or an answer.
    exported = json.dumps([s.attributes for s in receiver.spans])
    for secret in (key["key"], poor["key"], UPSTREAM_KEY, PROMPT, "Hello from the fake"):
        assert secret not in exported


def test_standard_otel_variables_are_honoured(
    tmp_path: Path,
    upstream: FakeOpenAI,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No endpoint in the config: the SDK's OTEL_* variables say where and how often."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    (tmp_path / "gw").mkdir()
    config = catalog(upstream.base_url, otel={"enabled": True})
    gateway = GatewayProcess(tmp_path / "gw", config).start()
    try:
        key = gateway.create_key("--credits", "5")
        traced = Traced()
        assert post(gateway, chat("gpt-5.2", stream=True), key["key"], traced)[0] == 200
        # exported while the gateway runs (the batch processor's delay, from the environment)
        gateway.wait_until(lambda: len(receiver.trace(traced.trace_id)) == 4, message="export")
    finally:
        gateway.stop()
    spans = receiver.trace(traced.trace_id)
    assert server_span(spans, traced).resource["service.name"] == "from-the-environment"


def test_without_the_extra_the_start_fails_with_one_clear_line(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden" / "opentelemetry" / "sdk"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    config = tmp_path / "relaygate.yaml"
    config.write_text(json.dumps({"database_url": f"sqlite:///{tmp_path / 'r.db'}",
                                  "otel": {"enabled": True}}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hidden"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "relaygate", "serve", "--config", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert MISSING_EXTRA in result.stderr
    assert "serving" not in result.stderr


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'relaygate\[otel\]'"):
        Tracing(OtelSettings(enabled=True))


def test_off_loads_nothing_of_opentelemetry(tmp_path: Path) -> None:
    """Tracing off (the default): an app that serves requests imports neither the trace SDK
    nor the exporter (redis-py imports OpenTelemetry's metrics SDK by itself when present)."""
    script = """
import asyncio, json, sys
from relaygate.app import create_app
from relaygate.settings import load_settings
from relaygate import tracing

async def main():
    app = create_app(load_settings())
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"authorization", b"Bearer nope")], "query_string": b""}
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}
    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    return sent[0]["status"]

status = asyncio.run(main())
loaded = sorted(m for m in sys.modules
                if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter")))
print(json.dumps({"status": status, "loaded": loaded, "enabled": tracing.enabled}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"status": 401, "loaded": [], "enabled": False}


@pytest.mark.parametrize(
    ("otel", "problem"),
    [
        pytest.param({"endpoint": "ftp://collector"}, "otel.endpoint", id="endpoint-scheme"),
        pytest.param({"sample_ratio": 1.5}, "otel.sample_ratio", id="ratio-above-1"),
        pytest.param({"enable": True}, "otel", id="unknown-key"),
    ],
)
def test_bad_otel_settings_are_config_errors(otel: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace(".", r"\.")):
        settings_from_mapping({"otel": otel}, "test.yaml", {})


def test_otel_settings_default_to_off() -> None:
    settings = settings_from_mapping({}, "test.yaml", {})
    assert settings.otel == OtelSettings()
    assert settings.otel.enabled is False


def test_collector_credentials_are_redacted_secrets() -> None:
    settings = settings_from_mapping(
        {"otel": {"endpoint": "https://user:endpoint-pass-123@collector.example/v1/traces",
                  "headers": {"authorization": "Bearer collector-token-0123"}}},
        "test.yaml", {},
    )  # fmt: skip
    secrets = configured_secrets(settings)
    assert "Bearer collector-token-0123" in secrets
    assert "endpoint-pass-123" in secrets
