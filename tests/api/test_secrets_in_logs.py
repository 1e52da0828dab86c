"""No raw key, client or upstream, reaches a log line, an error message or the database."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest

from relaygate.logs import RedactingFilter
from relaygate.redaction import Redactor
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

UPSTREAM_SECRET = "sk-upstream-SECRET-0123456789"
CHAT = "/v1/chat/completions"
HELLO: dict[str, Any] = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}


def error_of(answer: Any, status: int) -> dict[str, Any]:
    assert isinstance(answer, dict), answer
    error: dict[str, Any] = answer["error"]
    assert error["code"] == status
    return error


def test_no_key_in_debug_logs_errors_or_database(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    # every failure must reach the upstream (and the logs): never take it out of rotation
    gateway = make_gateway(log_level="debug", upstream_settings={"health_min_requests": 1000})
    client_keys: list[str] = []

    # unknown keys, one of them without the sk- prefix the log filter knows
    for unknown in ("sk-unknown-CLIENT-KEY-4242424242", "team-token-NOT-SK-PREFIXED-998877"):
        client_keys.append(unknown)
        status, _, answer = gateway.post(CHAT, HELLO, unknown)
        assert status == 401
        assert unknown not in json.dumps(answer)

    # a revoked key
    revoked = gateway.create_key("--credits", "10")
    client_keys.append(revoked["key"])
    gateway.cli("keys", "revoke", revoked["id"])
    gateway.wait_until(lambda: gateway.post(CHAT, HELLO, revoked["key"])[0] == 401)

    # a valid key against failing upstreams
    valid = gateway.create_key("--credits", "10")["key"]
    client_keys.append(valid)
    assert gateway.post(CHAT, HELLO, valid)[0] == 200
    failures = [
        Behavior(status=500),
        Behavior(status=401, error_body=f'{{"error":{{"message":"bad key {UPSTREAM_SECRET}"}}}}'),
        Behavior(status=503,
                 error_body=f'{{"error":{{"message":"bad key {UPSTREAM_SECRET}"}}}}'),
        Behavior(status=500,
                 error_body=f'{{"error":{{"message":"Incorrect API key: {UPSTREAM_SECRET}"}}}}'),
        Behavior(status=429, error_body=f"Bearer {UPSTREAM_SECRET} is over its quota"),
    ]
    for behavior in failures:
        upstream.default = behavior
        status, _, answer = gateway.post(CHAT, HELLO, valid)
        expected = 429 if behavior.status == 429 else 502  # every upstream refused for rate
        error = error_of(answer, expected)
        assert status == expected
        assert UPSTREAM_SECRET not in error["message"]
        assert valid not in json.dumps(answer)
    upstream.default = Behavior(status=500)
    status, _, answer = gateway.post(CHAT, {**HELLO, "stream": True}, valid)
    assert status == 502
    assert UPSTREAM_SECRET not in json.dumps(answer)

    gateway.stop()
    logs = gateway.logs()
    # the failures were logged (so the absence of keys below means something)...
    assert "rejects the gateway's credentials" in logs
    assert "answered HTTP 500" in logs
    assert " DEBUG " in logs
    # ...but no key was
    assert UPSTREAM_SECRET not in logs
    for key in client_keys:
        assert key not in logs, key
    # the database holds hashes, never the keys themselves
    for path in gateway.directory.glob("relaygate.db*"):
        stored = path.read_bytes()
        for key in client_keys:
            assert key.encode() not in stored, (path.name, key)


# --- the filter itself -------------------------------------------------------------------


def record(msg: str, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("relaygate.test", logging.ERROR, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        pytest.param("upstream key sk-proj-AbC_123-xyz failed", "sk-proj-AbC_123-xyz",
                     id="sk-key"),
        pytest.param("header was Authorization: Bearer abc.DEF-123_x=", "abc.DEF-123_x=",
                     id="bearer-token"),
        pytest.param("header was authorization: bearer lowercase-token-1", "lowercase-token-1",
                     id="lowercase-bearer"),
        pytest.param("configured secret my-custom-upstream-credential here",
                     "my-custom-upstream-credential", id="configured-secret"),
    ],
)
def test_redact_removes_keys(text: str, leaked: str) -> None:
    redactor = RedactingFilter(["my-custom-upstream-credential"])
    redacted = redactor.redact(text)
    assert leaked not in redacted
    assert "[redacted]" in redacted


def test_redact_keeps_ordinary_text() -> None:
    redactor = RedactingFilter(["abc"], Redactor())  # too short to be a secret: never replaced
    text = "upstream fake-openai failed: HTTP 500 for task-abc (sk-1)"
    assert redactor.redact(text) == text
    assert redactor.secrets == frozenset()


def test_filter_redacts_arguments_and_exceptions() -> None:
    redactor = RedactingFilter([UPSTREAM_SECRET, "plain-secret-value"])
    try:
        raise RuntimeError(f"connect failed with {UPSTREAM_SECRET} and plain-secret-value")
    except RuntimeError:
        entry = record("calling %s with %s", "upstream", "plain-secret-value",
                       exc_info=sys.exc_info())
    assert redactor.filter(entry) is True
    formatted = logging.Formatter("%(message)s").format(entry)
    assert "calling upstream with [redacted]" in formatted
    assert "RuntimeError" in formatted  # the traceback survives...
    assert UPSTREAM_SECRET not in formatted  # ...without the secrets
    assert "plain-secret-value" not in formatted


def test_filter_on_a_handler_redacts_the_final_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("relaygate.test.redaction")
    redactor = RedactingFilter([UPSTREAM_SECRET])
    caplog.handler.addFilter(redactor)
    try:
        with caplog.at_level(logging.INFO, logger="relaygate.test.redaction"):
            logger.info("client sent %r", {"authorization": "Bearer sk-client-KEY-00000000"})
            logger.warning("upstream said: %s", f"invalid key {UPSTREAM_SECRET}")
    finally:
        caplog.handler.removeFilter(redactor)
    assert len(caplog.records) == 2
    assert "sk-client-KEY-00000000" not in caplog.text
    assert UPSTREAM_SECRET not in caplog.text
    assert "upstream said: invalid key [redacted]" in caplog.text
