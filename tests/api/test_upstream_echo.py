"""Upstreams that echo their credential in errors: no form of it reaches a client or a log line.

Every provider (OpenAI-compatible, Azure, Anthropic, Gemini) is called through a real
``relaygate serve`` whose upstream quotes the key it received raw, in base64 at each of the three
byte alignments, as basic auth, URL-encoded and JSON-escaped, in an HTTP error (a 502, a 400 "the
upstream rejected the request"), as a stream's first event and mid-stream. A leak is looked for
independently of relaygate's redactor: by the encodings themselves, and by decoding every
base64-looking run of the answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from tests.api.echo_upstream import FORGED, FORMS, Echo, EchoUpstream
from tests.support.gateway import GatewayProcess, http

AZURE_KEY = "3f9a1c7e5b2d4086a1e9c3b7d5f20e8a"
GEMINI_KEY = "AIzaSyDx9Kq2LmN4pR7sT1vW3yZ5bC8dE0fG6hJ"
ANTHROPIC_KEY = "sk-ant-api03-Xy7Qp2Lm9Rt4Vw6Zb1Nc3Df5Gh8Jk0Mn-AbCdEfGhIjKlMnOp_yz0123456789AA"
COMPAT_KEY = 'Op+Key/With=Special&Chars"Quote\\Back~2026'
KEYS = {"azure": AZURE_KEY, "gemini": GEMINI_KEY, "claude": ANTHROPIC_KEY, "compat": COMPAT_KEY}
LABELS = {"azure": "fake-azure", "gemini": "fake-gemini", "claude": "fake-anthropic",
          "compat": "fake-compat"}
CASES = [
    pytest.param(False, Echo(form, "status", status), id=f"{form}-http{status}")
    for form in FORMS
    for status in (500, 400)
] + [
    pytest.param(True, Echo(form, where, 500), id=f"{form}-stream-{where}")
    for form in FORMS
    for where in ("status", "first", "mid")
]


def leaked_forms(text: str, secret: str) -> list[str]:
    """The forms of ``secret`` found in ``text``."""
    found = []
    escaped = json.dumps(secret)[1:-1]
    for name, form in (
        ("raw", secret),
        ("json-escaped", escaped),
        ("json-escaped-slash", escaped.replace("/", "\\/")),
        ("url-encoded", quote(secret, safe="")),
        ("url-encoded-plus", quote_plus(secret, safe="")),
    ):
        if form in text:
            found.append(name)
    core = secret.encode()[3:-3]
    for run in re.findall(r"[A-Za-z0-9+/_\-]{12,}", text):
        for shift in range(4):
            piece = run[shift:]
            piece = piece[: len(piece) // 4 * 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    if core in decode(piece):
                        found.append("base64")
                except (binascii.Error, ValueError):
                    pass
    return found


def leaks(text: str) -> dict[str, list[str]]:
    return {name: forms for name, key in KEYS.items() if (forms := leaked_forms(text, key))}


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[EchoUpstream]:
    fake = EchoUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def echo_gateway(
    tmp_path_factory: pytest.TempPathFactory, echo_upstream: EchoUpstream
) -> Iterator[GatewayProcess]:
    root = echo_upstream.root
    never_out = {"retries": 0, "health_min_requests": 100000}
    upstreams = {
        "azure": {"provider": "azure", "base_url": root, "model": "deploy",
                  "options": {"api_version": "2024-10-21"}},
        "gemini": {"provider": "gemini", "base_url": f"{root}/v1beta"},
        "claude": {"provider": "anthropic", "base_url": root},
        "compat": {"provider": "openai", "base_url": f"{root}/v1"},
    }
    models = {
        name: {
            "pricing": {"input": "1", "output": "1"},
            "upstreams": [{**upstream, "name": LABELS[name], "api_key": KEYS[name], **never_out}],
        }
        for name, upstream in upstreams.items()
    }
    directory: Path = tmp_path_factory.mktemp("echo-gateway")
    gateway = GatewayProcess(
        directory, {"models": models, "log_level": "debug", "ledger_flush_seconds": 0.05}
    ).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def echo_key(echo_gateway: GatewayProcess) -> str:
    return str(echo_gateway.create_key("--credits", "100")["key"])


def error_message(raw: bytes, stream: bool) -> str:
    """The error message of a JSON error body, or of a stream's closing SSE error event."""
    text = raw.decode()
    if stream and text.startswith("data:"):
        events = [line[6:] for line in text.splitlines() if line.startswith("data: {")]
        text = events[-1]
    error: dict[str, Any] = json.loads(text)["error"]
    return str(error["message"])


@pytest.mark.parametrize("model", list(KEYS))
@pytest.mark.parametrize(("stream", "echo"), CASES)
def test_an_echoed_credential_never_reaches_the_client(
    echo_gateway: GatewayProcess, echo_upstream: EchoUpstream, echo_key: str,
    model: str, stream: bool, echo: Echo,
) -> None:
    echo_upstream.script[:] = [echo]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    status, headers, raw = http("POST", echo_gateway.url + "/v1/chat/completions", body,
                                key=echo_key)
    assert not echo_upstream.script, "the upstream was not called"
    everything = raw.decode() + json.dumps(headers)
    assert leaks(everything) == {}, everything
    message = error_message(raw, stream)
    # relaygate's own sentence, then a short excerpt of the upstream's, on one line
    assert LABELS[model] in message or status == 400, message
    assert "Incorrect API key provided" in message
    assert not re.search(r"[\x00-\x1f\x7f]", message), message
    excerpt = message.partition("Incorrect API key provided")[2]
    assert len(excerpt) <= 200


def test_no_form_of_a_credential_in_the_log_and_no_forged_line(
    echo_gateway: GatewayProcess, echo_upstream: EchoUpstream, echo_key: str
) -> None:
    # the parametrized test above ran first (same module): the log holds all of its failures
    for model in KEYS:
        echo_upstream.script[:] = [Echo("newline-forgery")]
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        assert http("POST", echo_gateway.url + "/v1/chat/completions", body,
                    key=echo_key)[0] == 502
    logs = echo_gateway.logs()
    assert "answered HTTP 500" in logs  # upstream failures were logged...
    assert leaks(logs) == {}  # ...without any form of any key
    lines = logs.splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    assert Counter(line[:4] for line in lines if line[:1].isdigit())  # ordinary lines exist
