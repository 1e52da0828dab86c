"""Every error row of the contract: HTTP status, ``type``, the exact JSON envelope, and that
the 4xx answers are decided before any upstream call."""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import relaygate.app
from relaygate.api.http import Message, Receive, Scope, Send
from relaygate.app import App, Gateway
from relaygate.errors import (
    ApiError,
    AuthenticationFailed,
    InsufficientQuota,
    InternalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestTooLarge,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamUnreachable,
)
from relaygate.settings import Settings
from tests.conftest import catalog
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, free_port

UPSTREAM_SECRET = "sk-upstream-SECRET-0123456789"
ENVELOPE_KEYS = {"code", "message", "type", "param", "fallback_suggestion"}
HELLO: dict[str, Any] = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
CHAT = "/v1/chat/completions"


# --- helpers -----------------------------------------------------------------------------


def assert_error(
    status: int, body: Any, expected_status: int, expected_type: str
) -> dict[str, Any]:
    """``body`` is exactly the contract's error envelope for ``expected_status``; returns the
    inner ``error`` object."""
    assert status == expected_status, body
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert {"code", "message", "type"} <= set(error) <= ENVELOPE_KEYS, error
    assert error["code"] == status
    assert error["type"] == expected_type
    assert isinstance(error["message"], str)
    assert error["message"].strip()
    for optional in ("param", "fallback_suggestion"):
        if optional in error:  # present means a real string, never null
            assert isinstance(error[optional], str), error
            assert error[optional], error
    return error


def send_raw(
    gateway: GatewayProcess,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request with exactly these bytes and headers; the JSON answer if it is JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    try:
        return response.status, answer_headers, json.loads(raw)
    except ValueError:
        return response.status, answer_headers, raw


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def key(gateway: GatewayProcess) -> str:
    return str(gateway.create_key("--credits", "10")["key"])


# --- 400 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b"{not json", "not valid JSON", id="bad-json"),
        pytest.param(b"", "empty", id="empty-body"),
        pytest.param(b"[1, 2, 3]", "JSON object", id="array-body"),
        pytest.param(b'"hello"', "JSON object", id="string-body"),
        pytest.param(b"null", "JSON object", id="null-body"),
    ],
)
def test_400_unreadable_body(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI, body: bytes, words: str
) -> None:
    status, headers, answer = send_raw(
        gateway, "POST", CHAT, body,
        {"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    error = assert_error(status, answer, 400, "invalid_request_error")
    assert words in error["message"]
    assert "param" not in error
    assert headers["content-type"].startswith("application/json")
    assert upstream.received == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({**HELLO, "temperature": 2.5}, "temperature", id="temperature"),
        pytest.param({**HELLO, "top_p": 1.5}, "top_p", id="top_p"),
        pytest.param({**HELLO, "top_k": 0}, "top_k", id="top_k"),
        pytest.param({"model": "gpt-5.2", "messages": []}, "messages", id="no-messages"),
        pytest.param({"messages": HELLO["messages"]}, "model", id="no-model"),
        pytest.param(
            {"model": "gpt-5.2", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            id="unknown-role",
        ),
        pytest.param({**HELLO, "max_tokens": 0}, "max_tokens", id="max_tokens-0"),
        pytest.param({**HELLO, "max_tokens": 128001}, "max_tokens", id="max_tokens-over-model"),
        pytest.param(
            {
                "model": "text-only",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
                        ],
                    }
                ],
            },
            "messages[0].content[1]",
            id="image-to-text-only-model",
        ),
    ],
)
def test_400_validation_names_the_param(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    status, _, answer = gateway.post(CHAT, body, key)
    error = assert_error(status, answer, 400, "invalid_request_error")
    assert error["param"] == param
    assert upstream.received == []


def test_400_is_decided_before_402(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    broke = gateway.create_key("--credits", "0")["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "temperature": 9}, broke)
    assert assert_error(status, answer, 400, "invalid_request_error")["param"] == "temperature"
    # the same key with a valid request is refused for its credits
    status, _, answer = gateway.post(CHAT, HELLO, broke)
    assert_error(status, answer, 402, "insufficient_quota_error")
    assert upstream.received == []


# --- 401 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param("Bearer    ", id="bearer-blank-token"),
        pytest.param("sk-just-the-key-without-scheme", id="no-scheme"),
    ],
)
def test_401_missing_or_malformed_header(
    gateway: GatewayProcess, upstream: FakeOpenAI, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    status, _, answer = send_raw(gateway, "POST", CHAT, json.dumps(HELLO).encode(), headers)
    error = assert_error(status, answer, 401, "authentication_error")
    assert "Authorization: Bearer" in error["message"]
    assert upstream.received == []


def test_401_unknown_key_is_not_echoed(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    guessed = "sk-guessed-key-0000000000000000000000000000"
    status, _, answer = gateway.post(CHAT, HELLO, guessed)
    error = assert_error(status, answer, 401, "authentication_error")
    assert "not known" in error["message"]
    assert guessed not in json.dumps(answer)
    assert upstream.received == []


def test_401_is_decided_before_the_body_is_read(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    status, _, answer = send_raw(
        gateway, "POST", CHAT, b"{broken", {"content-type": "application/json"}
    )
    assert_error(status, answer, 401, "authentication_error")
    assert upstream.received == []


def test_401_revoked_key(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    created = gateway.create_key("--credits", "10")
    assert gateway.post(CHAT, HELLO, created["key"])[0] == 200
    gateway.cli("keys", "revoke", created["id"])
    gateway.wait_until(
        lambda: gateway.post(CHAT, HELLO, created["key"])[0] == 401, message="revocation"
    )
    before = len(upstream.received)
    status, _, answer = gateway.post(CHAT, HELLO, created["key"])
    error = assert_error(status, answer, 401, "authentication_error")
    assert "revoked" in error["message"]
    assert len(upstream.received) == before


def test_401_expired_key(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    created = json.loads(
        gateway.cli(
            "keys", "create", "--json", "--credits", "10", "--expires-at", "2001-01-01T00:00:00Z"
        ).stdout
    )

    def expired() -> bool:
        status, _, answer = gateway.post(CHAT, HELLO, created["key"])
        return status == 401 and "expired" in answer["error"]["message"]

    gateway.wait_until(expired, message="the key is known and expired")
    status, _, answer = gateway.post(CHAT, HELLO, created["key"])
    assert_error(status, answer, 401, "authentication_error")
    assert upstream.received == []


def test_a_key_expiring_in_the_future_works(gateway: GatewayProcess) -> None:
    created = gateway.create_key("--credits", "10", "--expires-at", "2999-01-01T00:00:00+00:00")
    assert gateway.post(CHAT, HELLO, created["key"])[0] == 200


# --- 402 ---------------------------------------------------------------------------------


def test_402_cannot_afford_the_prompt(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    poor = gateway.create_key("--credits", "0.000001")["key"]
    status, _, answer = gateway.post(CHAT, HELLO, poor)
    error = assert_error(status, answer, 402, "insufficient_quota_error")
    assert "cannot afford the prompt" in error["message"]
    assert error.get("fallback_suggestion")
    assert upstream.received == []
    # nothing was charged or left reserved
    assert gateway.credits(poor)["used_credits"] == 0


def test_402_names_the_output_tokens_the_key_can_afford(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "0.01")["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "max_tokens": 100000}, key)
    error = assert_error(status, answer, 402, "insufficient_quota_error")
    match = re.search(r"at most (\d+) output tokens", error["message"])
    assert match, error["message"]
    affordable = int(match.group(1))
    assert 0 < affordable < 100000
    assert upstream.received == []
    # the figure is true: twice as many is refused, exactly that many is served
    status, _, answer = gateway.post(CHAT, {**HELLO, "max_tokens": 2 * affordable}, key)
    assert_error(status, answer, 402, "insufficient_quota_error")
    assert upstream.received == []
    status, _, answer = gateway.post(CHAT, {**HELLO, "max_tokens": affordable}, key)
    assert status == 200, answer
    assert len(upstream.received) == 1


def test_402_without_max_tokens_reserves_the_model_maximum(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    # 128000 output tokens of gpt-5.2 cost $1.792: $1 is not enough for the worst case (with
    # clamp_output_to_balance on, the request would be sent with the limit $1 affords instead)
    gateway = make_gateway(clamp_output_to_balance=False)
    key = gateway.create_key("--credits", "1")["key"]
    status, _, answer = gateway.post(CHAT, HELLO, key)
    error = assert_error(status, answer, 402, "insufficient_quota_error")
    assert "output tokens" in error["message"]
    assert upstream.received == []


def test_a_refused_request_takes_no_rate_limit_slot(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "0", "--rpm", "1")["key"]
    for _ in range(3):
        status, _, answer = gateway.post(CHAT, HELLO, key)
        assert_error(status, answer, 402, "insufficient_quota_error")
    assert upstream.received == []


# --- 403 / 404 ---------------------------------------------------------------------------


def test_403_model_not_allowed_for_the_key(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    limited = gateway.create_key("--credits", "10", "--models", "gpt-5.2")["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": "gpt-5.5"}, limited)
    error = assert_error(status, answer, 403, "permission_error")
    assert error["param"] == "model"
    assert "gpt-5.5" in error["message"]
    assert upstream.received == []


@pytest.mark.parametrize(
    ("allowed", "asked", "suggestion"),
    [
        pytest.param("gpt-5.2", "gpt-5.3", "gpt-5.2", id="only-gpt-5.2"),
        pytest.param("gpt-5.5", "gpt-5.3", "gpt-5.5", id="only-gpt-5.5"),
        pytest.param("gpt-5.2,relaygate-simulator", "relaygate-sim", "relaygate-simulator",
                     id="closest-of-two"),
        pytest.param("text-only", "gpt-5.2-mini", "text-only", id="never-a-forbidden-model"),
    ],
)
def test_404_suggests_the_closest_model_the_key_may_use(
    gateway: GatewayProcess, upstream: FakeOpenAI, allowed: str, asked: str, suggestion: str
) -> None:
    limited = gateway.create_key("--credits", "10", "--models", allowed)["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": asked}, limited)
    error = assert_error(status, answer, 404, "not_found_error")
    assert error["param"] == "model"
    assert error["fallback_suggestion"] == suggestion
    assert upstream.received == []


def test_404_and_403_come_before_402(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    broke = gateway.create_key("--credits", "0", "--models", "gpt-5.2")["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": "no-such-model"}, broke)
    assert_error(status, answer, 404, "not_found_error")
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": "gpt-5.5"}, broke)
    assert_error(status, answer, 403, "permission_error")
    assert upstream.received == []


# --- 413 ---------------------------------------------------------------------------------


@pytest.fixture
def small_gateway(make_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return make_gateway(max_request_bytes=2048)


def big_request() -> dict[str, Any]:
    return {**HELLO, "messages": [{"role": "user", "content": "x" * 4096}]}


def test_413_body_over_max_request_bytes(
    small_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = small_gateway.create_key("--credits", "10")["key"]
    status, _, answer = small_gateway.post(CHAT, big_request(), key)
    error = assert_error(status, answer, 413, "request_too_large_error")
    assert "2048" in error["message"]
    assert upstream.received == []
    # a body under the limit is served by the same gateway
    assert small_gateway.post(CHAT, HELLO, key)[0] == 200


def test_413_chunked_body_without_content_length(
    small_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    """The 413 is decided after 2 KiB of a 4 KiB body sent in 512-byte chunks: the gateway reads
    and drops the rest before it closes, so the client, still sending, reads the answer (when it
    closed at once, about 4 runs in 100 ended in ``BrokenPipeError``)."""
    key = small_gateway.create_key("--credits", "10")["key"]
    payload = json.dumps(big_request()).encode()
    pieces = iter([payload[i : i + 512] for i in range(0, len(payload), 512)])
    status, _, answer = send_raw(
        small_gateway, "POST", CHAT, pieces,
        {"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert_error(status, answer, 413, "request_too_large_error")
    assert upstream.received == []


# --- 429 ---------------------------------------------------------------------------------


def test_429_requests_per_minute_with_retry_after(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "10", "--rpm", "1")["key"]
    assert gateway.post(CHAT, HELLO, key)[0] == 200
    status, headers, answer = gateway.post(CHAT, HELLO, key)
    error = assert_error(status, answer, 429, "rate_limit_error")
    retry_after = lower(headers)["retry-after"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    assert error["fallback_suggestion"] == f"retry after {retry_after} seconds"
    assert "1 requests per minute" in error["message"]
    assert len(upstream.received) == 1  # only the first request went upstream


@pytest.fixture
def slow_gateway(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> GatewayProcess:
    """A gateway with a model whose first token never comes while the test runs."""
    models = catalog(upstream.base_url)["models"]
    models["slow"] = {
        "pricing": {"input": "0.1", "output": "0.1"},
        "upstreams": [{"provider": "simulator", "options": {"first_token_ms": 600000}}],
    }
    return make_gateway(models=models, disconnect_drain_seconds=0.1)


def test_429_concurrency_until_the_running_request_ends(slow_gateway: GatewayProcess) -> None:
    gateway = slow_gateway
    key = gateway.create_key("--credits", "10", "--concurrency", "1")["key"]
    fast = {**HELLO, "model": "relaygate-simulator"}
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    body = json.dumps({**HELLO, "model": "slow", "stream": True}).encode()
    conn.request(
        "POST", CHAT, body=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    running = conn.getresponse()  # the headers arrive once the request holds its slot
    try:
        assert running.status == 200
        status, headers, answer = gateway.post(CHAT, fast, key)
        error = assert_error(status, answer, 429, "rate_limit_error")
        assert "1 concurrent requests" in error["message"]
        assert lower(headers)["retry-after"] == "1"
    finally:
        running.close()
        conn.close()
    # the client went away: the slot is released and the key works again
    gateway.wait_until(lambda: gateway.post(CHAT, fast, key)[0] == 200, message="slot released")


# --- 500 (in-process) --------------------------------------------------------------------


class Exchange:
    """Calls the ASGI app with a hand-made request and keeps what it sent."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sent: list[Message] = []

    async def __call__(self, method: str, path: str, body: bytes = b"") -> None:
        scope: Scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"content-type", b"application/json")],
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            self.sent.append(message)

        await self.app(scope, receive, send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[Exchange]:
    gateway = Gateway(Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}"))
    yield Exchange(App(gateway))
    await gateway.store.close()


def raising(exc: BaseException) -> Callable[[Gateway, Scope, Receive, Send], Any]:
    async def handler(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return handler


async def test_500_unhandled_exception(
    in_process: Exchange, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    boom = RuntimeError(f"database password hunter2 and {UPSTREAM_SECRET}")
    monkeypatch.setitem(relaygate.app.ROUTES, "/boom", {"GET": raising(boom)})
    with caplog.at_level(logging.ERROR, logger="relaygate"):
        await in_process("GET", "/boom")
    assert in_process.json() == {
        "error": {
            "code": 500,
            "message": "Internal server error",
            "type": "internal_server_error",
            "fallback_suggestion": "try again later",
        }
    }
    assert in_process.status == 500
    assert in_process.headers[b"content-type"] == b"application/json"
    # the exception is logged for the operator, not shown to the client
    assert any(r.exc_info and r.exc_info[1] is boom for r in caplog.records)


async def test_an_error_after_the_response_started_starts_no_second_response(
    in_process: Exchange, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def half_stream(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
        raise RuntimeError("a bug while streaming")

    monkeypatch.setitem(relaygate.app.ROUTES, "/half", {"GET": half_stream})
    with caplog.at_level(logging.ERROR, logger="relaygate"):
        await in_process("GET", "/half")
    starts = [m for m in in_process.sent if m["type"] == "http.response.start"]
    # ASGI allows one start per response: a second one is a protocol error for the server,
    # and the client gets a cut connection instead of an error it can read
    assert len(starts) == 1, in_process.sent


CONTRACT_ROWS = [
    pytest.param(InvalidRequest("x"), 400, "invalid_request_error", id="400"),
    pytest.param(AuthenticationFailed("x"), 401, "authentication_error", id="401"),
    pytest.param(InsufficientQuota("x"), 402, "insufficient_quota_error", id="402"),
    pytest.param(PermissionDenied("x", param="model"), 403, "permission_error", id="403"),
    pytest.param(NotFound("x", param="model"), 404, "not_found_error", id="404"),
    pytest.param(RequestTooLarge("x"), 413, "request_too_large_error", id="413"),
    pytest.param(RateLimited("x", retry_after=2.2), 429, "rate_limit_error", id="429"),
    pytest.param(InternalError("x"), 500, "internal_server_error", id="500"),
    pytest.param(UpstreamError("x"), 502, "upstream_error", id="502"),
    pytest.param(UpstreamUnreachable("x"), 502, "upstream_error", id="502-unreachable"),
    pytest.param(
        UpstreamStatus("x", upstream="u", upstream_status=500), 502, "upstream_error",
        id="502-status",
    ),
    pytest.param(UpstreamProtocolError("x"), 502, "upstream_error", id="502-protocol"),
    pytest.param(ServiceUnavailable("x"), 503, "service_unavailable_error", id="503"),
]


@pytest.mark.parametrize(("error", "status", "kind"), CONTRACT_ROWS)
async def test_every_contract_row_renders_its_status_and_type(
    in_process: Exchange,
    monkeypatch: pytest.MonkeyPatch,
    error: ApiError,
    status: int,
    kind: str,
) -> None:
    monkeypatch.setitem(relaygate.app.ROUTES, "/raise", {"POST": raising(error)})
    await in_process("POST", "/raise")
    assert in_process.status == status
    inner = assert_error(status, in_process.json(), status, kind)
    assert inner["message"] == "x"
    assert inner.get("param") == error.param
    assert inner.get("fallback_suggestion") == error.fallback_suggestion
    if status == 429:
        assert in_process.headers[b"retry-after"] == b"3"
        assert inner["fallback_suggestion"] == "retry after 3 seconds"


# --- 502 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_status", [500, 502, 503])  # 429: tests/routing
def test_502_after_one_retry_of_a_failing_upstream(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI, upstream_status: int
) -> None:
    raw_body = "<html><body>nginx exploded RAW-UPSTREAM-BODY-7f3a</body></html>"
    upstream.default = Behavior(status=upstream_status, error_body=raw_body, retry_after="0")
    status, _, answer = gateway.post(CHAT, HELLO, key)
    error = assert_error(status, answer, 502, "upstream_error")
    assert error["fallback_suggestion"] == "try different model"
    text = json.dumps(answer)
    assert UPSTREAM_SECRET not in text
    assert "RAW-UPSTREAM-BODY" not in text
    assert "<html>" not in text
    assert len(upstream.received) == 2  # one retry on the one upstream
    # a failed request costs nothing
    assert gateway.credits(key)["used_credits"] == 0


def test_502_json_error_body_is_not_passed_through_raw(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    body = json.dumps(
        {"error": {"message": f"overloaded, key {UPSTREAM_SECRET}", "internal": "TRACE-99"}}
    )
    upstream.default = Behavior(status=500, error_body=body)
    status, _, answer = gateway.post(CHAT, HELLO, key)
    error = assert_error(status, answer, 502, "upstream_error")
    assert UPSTREAM_SECRET not in error["message"]
    assert "TRACE-99" not in error["message"]
    assert body not in error["message"]


def test_502_unreachable_upstream(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    models = catalog(upstream.base_url)["models"]
    closed = f"http://127.0.0.1:{free_port()}/v1"
    models["dead"] = {
        "pricing": {"input": "1", "output": "1"},
        "upstreams": [{"provider": "openai", "name": "dead-upstream", "base_url": closed,
                       "api_key": UPSTREAM_SECRET, "connect_timeout": 5}],
    }
    gateway = make_gateway(models=models)
    key = gateway.create_key("--credits", "10")["key"]
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": "dead"}, key)
    error = assert_error(status, answer, 502, "upstream_error")
    assert "dead-upstream" in error["message"]
    assert UPSTREAM_SECRET not in json.dumps(answer)
    assert gateway.credits(key)["used_credits"] == 0


def test_upstream_401_is_a_502_and_not_retried(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(status=401, error_body='{"error": {"message": "bad api key"}}')
    status, _, answer = gateway.post(CHAT, HELLO, key)
    error = assert_error(status, answer, 502, "upstream_error")
    assert "credentials" in error["message"]
    assert UPSTREAM_SECRET not in json.dumps(answer)
    assert len(upstream.received) == 1


def test_upstream_429_then_200_succeeds_after_the_retry(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    upstream.script = [Behavior(status=429, retry_after="0")]
    status, _, answer = gateway.post(CHAT, HELLO, key)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert len(upstream.received) == 2


def test_stream_upstream_failure_before_start_is_a_json_502(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(status=500)
    status, headers, answer = gateway.post(CHAT, {**HELLO, "stream": True}, key)
    assert_error(status, answer, 502, "upstream_error")
    assert lower(headers)["content-type"].startswith("application/json")
    assert len(upstream.received) == 2


# --- 503 ---------------------------------------------------------------------------------


def test_503_model_without_upstream(gateway: GatewayProcess, key: str) -> None:
    status, _, answer = gateway.post(CHAT, {**HELLO, "model": "unrouted"}, key)
    error = assert_error(status, answer, 503, "service_unavailable_error")
    assert "models.unrouted.upstreams" in error["message"]
    assert "OPENAI_API_KEY" in error["message"]
    assert error.get("fallback_suggestion")
    assert gateway.credits(key)["used_credits"] == 0


# --- routes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "words", "status", "allow"),
    [
        pytest.param("GET", "/v1/nope", "Unknown route", 404, None, id="unknown-get"),
        pytest.param("POST", "/v2/chat/completions", "Unknown route", 404, None, id="unknown-post"),
        pytest.param("GET", CHAT, "POST", 405, "POST", id="get-on-chat"),
        pytest.param("DELETE", "/v1/models", "GET", 405, "GET, HEAD", id="delete-on-models"),
    ],
)
def test_unknown_route_and_wrong_method_are_json_errors(
    gateway: GatewayProcess,
    key: str,
    upstream: FakeOpenAI,
    method: str,
    path: str,
    words: str,
    status: int,
    allow: str | None,
) -> None:
    answered, headers, answer = send_raw(
        gateway, method, path, None, {"authorization": f"Bearer {key}"}
    )
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    error = assert_error(answered, answer, status, kind)
    assert words in error["message"]
    assert headers["content-type"].startswith("application/json")
    assert headers.get("allow") == allow
    assert upstream.received == []
