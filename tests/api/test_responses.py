"""``POST /v1/responses`` through a running relaygate, with the ``openai`` SDK as users call it:
translated to a chat-completions upstream, passed through to one that speaks Responses, stored
and continued, refused when bad, billed on a disconnect, and never overspent."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from tests.api.test_images import image_server
from tests.conftest import catalog
from tests.media.samples import png
from tests.support.fake_openai import Behavior
from tests.support.fake_responses import FakeResponses
from tests.support.gateway import GatewayProcess, credits_of, http, ledger

__all__ = ["image_server"]

CHAT_REQUEST: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(CompletionCreateParamsBase)
TOOL = {"type": "function", "name": "shell", "description": "Run a command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                       "required": ["cmd"]}, "strict": False}  # fmt: skip
CALL = {"id": "call_up1", "type": "function",
        "function": {"name": "shell", "arguments": '{"cmd": "ls"}'}}  # fmt: skip


@pytest.fixture
def upstream() -> Iterator[FakeResponses]:
    fake = FakeResponses(default=Behavior())
    fake.start()
    yield fake
    fake.stop()


def config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """The test catalog, plus ``gpt-native``: an upstream that speaks Responses."""
    settings = catalog(upstream_url, **overrides)
    settings["models"]["gpt-native"] = {
        "pricing": {"input": "2", "cached_input": "0.5", "output": "8"},
        "max_output_tokens": 128000,
        "vision": True,
        "upstreams": [{"provider": "openai", "name": "native", "base_url": upstream_url,
                       "api_key": "sk-upstream-SECRET-0123456789", "model": "gpt-up",
                       "options": {"responses": True}}],
    }  # fmt: skip
    settings["models"]["gpt-azure"] = {
        "pricing": {"input": "2", "output": "8"},
        "upstreams": [{"provider": "azure", "base_url": upstream_url.removesuffix("/v1"),
                       "api_key": "azure-SECRET-0123456789", "model": "deployment-1",
                       "options": {"responses": True}}],
    }  # fmt: skip
    return settings


@pytest.fixture
def make(tmp_path: Path, upstream: FakeResponses) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(**overrides: Any) -> GatewayProcess:
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        gateway = GatewayProcess(directory, config(upstream.base_url, **overrides)).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make: Callable[..., GatewayProcess]) -> GatewayProcess:
    return make()


@pytest.fixture
def key(gateway: GatewayProcess) -> dict[str, Any]:
    return gateway.create_key("--credits", "10")


OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test opened is closed after it (its pooled sockets with it)."""
    yield
    while OPENED:
        OPENED.pop().close()


def client(gateway: GatewayProcess, key: dict[str, Any]) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key["key"], max_retries=0)
    OPENED.append(sdk)
    return sdk


def rows(gateway: GatewayProcess, key: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
    gateway.wait_until(lambda: len(ledger(gateway, key["id"])) >= count, message="ledger rows")
    return ledger(gateway, key["id"])


def test_create_is_translated_for_a_chat_upstream(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    upstream.default = Behavior(text="Hi there", prompt_tokens=30, completion_tokens=12,
                                cached_tokens=10, reasoning_tokens=4)  # fmt: skip
    answer = client(gateway, key).responses.create(
        model="gpt-5.2", instructions="Be brief.", input="Who are you?", max_output_tokens=500,
        metadata={"ticket": "42"}, reasoning={"effort": "low"},
    )  # fmt: skip
    assert answer.id.startswith("resp_")
    assert answer.status == "completed"
    assert answer.model == "gpt-5.2"
    assert answer.output_text == "Hi there"
    assert answer.metadata == {"ticket": "42"}
    assert answer.to_dict()["store"] is False  # stored responses are off on this gateway
    usage = answer.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (30, 12, 42)
    assert usage.input_tokens_details.cached_tokens == 10
    assert usage.output_tokens_details.reasoning_tokens == 4
    sent = upstream.received[-1]
    assert sent.path == "/v1/chat/completions"
    CHAT_REQUEST.validate_python(sent.body)
    assert sent.body["model"] == "gpt-5.2-upstream"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
    ]
    assert sent.body["max_completion_tokens"] == 500
    assert sent.body["reasoning_effort"] == "low"
    (row,) = rows(gateway, key)
    assert row["request_id"] == answer.id
    assert row["status"] == "ok"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (30, 12, 10)
    assert row["api"] == "responses"


def test_stream_and_a_function_call_turn(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    upstream.script = [
        Behavior(text="", tool_call=CALL, finish_reason="tool_calls"),
        Behavior(text="There are 3 files.", chunks=4),
    ]
    sdk = client(gateway, key)
    with sdk.responses.stream(model="gpt-5.2", input="List the files", tools=[TOOL]) as stream:
        events = list(stream)
        first = stream.get_final_response()
    kinds = [event.type for event in events]
    # numbered in the order sent, the start events first (they were numbered after the first
    # item's events once)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    (call,) = first.output
    assert call.type == "function_call"
    assert (call.name, call.call_id, call.arguments) == ("shell", "call_up1", '{"cmd": "ls"}')
    second_input: list[Any] = [
        {"role": "user", "content": "List the files"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "a b c"},
    ]
    with sdk.responses.stream(model="gpt-5.2", input=second_input, tools=[TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text == "There are 3 files."
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output[0].id != call.id  # item ids unique across responses
    sent = upstream.received[-1].body
    CHAT_REQUEST.validate_python(sent)
    assert sent["tools"][0]["function"]["name"] == "shell"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_up1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_up1", "content": "a b c"}
    assert [r["status"] for r in rows(gateway, key, 2)] == ["ok", "ok"]


def test_a_responses_upstream_gets_the_body_as_sent(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    upstream.default = Behavior(text="native answer", prompt_tokens=40, completion_tokens=9,
                                cached_tokens=8, reasoning_tokens=3, reasoning="r1")  # fmt: skip
    reasoning = {"type": "reasoning", "id": "rs_before", "summary": [],
                 "encrypted_content": "gAAAA-opaque-blob"}  # fmt: skip
    sdk = client(gateway, key)
    items: list[Any] = [{"role": "user", "content": "hi"}, reasoning,
                        {"role": "user", "content": "again"}]  # fmt: skip
    answer = sdk.responses.create(
        model="gpt-native", input=items, include=["reasoning.encrypted_content"],
        reasoning={"effort": "high", "summary": "auto"},
    )  # fmt: skip
    assert answer.output_text == "native answer"
    assert answer.id.startswith("resp_up")  # the upstream's own answer
    sent = upstream.received[-1]
    assert upstream.invalid == []
    assert sent.path == "/v1/responses"
    assert sent.body["model"] == "gpt-up"
    assert sent.body["store"] is False
    assert sent.body["input"][1] == reasoning  # passed back unchanged
    assert sent.body["reasoning"] == {"effort": "high", "summary": "auto"}
    with sdk.responses.stream(model="gpt-native", input="stream it") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == "native answer"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    first, second = rows(gateway, key, 2)
    assert (first["prompt_tokens"], first["completion_tokens"]) == (40, 9)
    assert (first["cached_tokens"], first["reasoning_tokens"]) == (8, 3)
    assert second["status"] == "ok"
    assert second["stream"] in (1, True)


def test_azure_with_its_responses_option_passes_through(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    answer = client(gateway, key).responses.create(model="gpt-azure", input="hi")
    assert answer.output_text == "Hello from the fake upstream."
    sent = upstream.received[-1]
    assert sent.path == "/openai/v1/responses"
    assert sent.headers["api-key"] == "azure-SECRET-0123456789"
    assert sent.body["model"] == "deployment-1"


def test_previous_response_id_without_storage_is_a_clear_400(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway, key).responses.create(
            model="gpt-5.2", input="more", previous_response_id="resp_123"
        )
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == "previous_response_id"
    assert "stored_responses" in error["message"]
    assert upstream.received == []


def test_stored_responses_continue_only_within_their_account(
    make: Callable[..., GatewayProcess], upstream: FakeResponses
) -> None:
    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "10")
    sdk = client(gateway, key)
    upstream.script = [Behavior(text="Paris.", reasoning="It is Paris."),
                       Behavior(text="About 2 million.")]  # fmt: skip
    first = sdk.responses.create(model="gpt-5.2", input="Capital of France?")
    assert first.to_dict()["store"] is True
    second = sdk.responses.create(
        model="gpt-5.2", input="Its population?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert upstream.received[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Its population?"},
    ]
    # a key of another account cannot continue it; a request with store: false is not kept
    other = gateway.create_key("--credits", "10")
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway, other).responses.create(
            model="gpt-5.2", input="x", previous_response_id=first.id
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == "previous_response_id"
    unstored = sdk.responses.create(model="gpt-5.2", input="forget me", store=False)
    assert unstored.to_dict()["store"] is False
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="gpt-5.2", input="x", previous_response_id=unstored.id)
    # passed through: the upstream gets the whole conversation, and is asked not to store
    native = sdk.responses.create(
        model="gpt-native", input="Go on", previous_response_id=second.id,
        reasoning={"effort": "low"},
    )  # fmt: skip
    sent = upstream.received[-1].body
    assert "previous_response_id" not in sent
    assert sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]  # to store its reasoning
    # the stored reasoning (a chat upstream's, without encrypted content) is not sent
    assert [item.get("role", item["type"]) for item in sent["input"]] == [
        "user", "assistant", "user", "assistant", "user"
    ]  # fmt: skip
    assert native.id.startswith("resp_up")


BAD = [
    pytest.param({"input": "x", "frobnicate": 1}, "frobnicate", id="unknown-field"),
    pytest.param({"input": "x", "conversation": "c"}, "conversation", id="unsupported"),
    pytest.param({"input": [{"type": "item_reference", "id": "i"}]}, "input[0].type",
                 id="item-type"),
    pytest.param({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type",
                 id="hosted-tool"),
    pytest.param({"input": "x", "max_output_tokens": 999999}, "max_output_tokens",
                 id="max-output"),
    pytest.param({"model": "text-only", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
                 "input[0].content[0]", id="image-without-vision"),
    pytest.param({"input": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        ]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "input",
                 id="too-deep"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_input_is_a_400_naming_param_and_changes_nothing(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses,
    fields: dict[str, Any], param: str,
) -> None:  # fmt: skip
    before = credits_of(gateway, key["key"])
    status, _, body = gateway.post("/v1/responses", {"model": "gpt-5.2", **fields}, key["key"])
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert credits_of(gateway, key["key"]) == before
    assert upstream.received == []
    assert ledger(gateway, key["id"]) == []


async def test_concurrent_requests_never_overdraw_the_key(
    gateway: GatewayProcess, upstream: FakeResponses
) -> None:
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=20)
    body = json.dumps({"model": "gpt-5.2", "input": "How much?", "max_output_tokens": 20})
    key = gateway.create_key("--credits", "0.01")
    headers = {"authorization": f"Bearer {key['key']}", "content-type": "application/json"}

    async def one(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with session.post(gateway.url + "/v1/responses", data=body, headers=headers) as r:
            return r.status, await r.json()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        results = await asyncio.gather(*(one(session) for _ in range(100)))
    ok = [answer for status, answer in results if status == 200]
    refused = [answer for status, answer in results if status == 402]
    assert len(ok) + len(refused) == 100
    assert ok
    assert refused
    assert all(a["error"]["type"] == "insufficient_quota_error" for a in refused)
    credits = credits_of(gateway, key["key"])
    assert credits["remaining_credits"] >= 0
    assert credits["used_credits"] <= Decimal("0.01")
    assert len(upstream.received) == len(ok)
    gateway.wait_until(lambda: len(ledger(gateway, key["id"])) == len(ok), message="rows")
    charged = sum(row["cost_micros"] for row in ledger(gateway, key["id"]))
    assert credits["used_credits"] == Decimal(charged).scaleb(-6)


async def read_first_delta_and_hang_up(
    gateway: GatewayProcess, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        resp = await session.post(gateway.url + "/v1/responses", json=body, headers=headers)
        try:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if line.startswith(b"data:") and b"output_text.delta" in line:
                    first: dict[str, Any] = json.loads(line[5:])
                    break
            else:
                pytest.fail("the stream ended before its first delta")
        finally:
            resp.close()
    return first


@pytest.mark.parametrize("model", ["gpt-5.2", "gpt-native"])
async def test_a_client_disconnect_is_billed_the_upstreams_usage(
    make: Callable[..., GatewayProcess], upstream: FakeResponses, model: str
) -> None:
    gateway = make(disconnect_drain_seconds=30)
    key = gateway.create_key("--credits", "10")
    upstream.default = Behavior(text="x" * 40, chunks=40, chunk_delay=0.05, prompt_tokens=11,
                                completion_tokens=57)  # fmt: skip
    body = {"model": model, "input": "long answer please", "stream": True}
    first = await read_first_delta_and_hang_up(gateway, key["key"], body)
    assert first["delta"] == "x"
    (row,) = rows(gateway, key)
    assert row["status"] == "client_disconnected"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 57)
    assert credits_of(gateway, key["key"])["used_credits"] == Decimal(row["cost_micros"]).scaleb(-6)


@pytest.mark.parametrize(("model", "last"), [("gpt-5.2", "response.failed"),
                                             ("gpt-native", "error")])  # fmt: skip
async def test_a_cut_stream_ends_with_a_failure_event(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses, model: str, last: str
) -> None:
    upstream.default = Behavior(text="abcdef", chunks=6, cut_after=2)
    headers = {"authorization": f"Bearer {key['key']}"}
    body = {"model": model, "input": "x", "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.url + "/v1/responses", json=body, headers=headers) as resp,
    ):
        raw = await resp.read()
    events = [json.loads(line[5:]) for line in raw.split(b"\n") if line.startswith(b"data:")]
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["a", "b"]
    assert events[-1]["type"] == last
    if last == "response.failed":
        assert events[-1]["response"]["status"] == "failed"
        assert events[-1]["response"]["error"]["code"] == "server_error"
    else:  # after the upstream's own events, relaygate's error event ends the stream
        assert events[-1]["code"] == "server_error"
        assert "Upstream native failed mid-stream" in events[-1]["message"]
    assert rows(gateway, key)[0]["status"] == "upstream_error"


def image_input(url: str) -> list[dict[str, Any]]:
    image = {"type": "input_image", "image_url": url, "detail": "auto"}
    return [{"role": "user", "content": [{"type": "input_text", "text": "what is it?"}, image]}]


def test_image_urls_never_reach_internal_addresses(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeResponses
) -> None:
    before = credits_of(gateway, key["key"])
    status, _, body = gateway.post(
        "/v1/responses",
        {"model": "gpt-5.2", "input": image_input("http://127.0.0.1:9/a.png")},
        key["key"],
    )
    assert status == 400, body
    assert body["error"]["param"] == "input[0].content[1]"
    assert credits_of(gateway, key["key"]) == before
    assert upstream.received == []


def test_a_checked_image_reaches_a_responses_upstream_inline(
    make: Callable[..., GatewayProcess], upstream: FakeResponses, image_server: int
) -> None:
    gateway = make(images={"allow_internal": [f"127.0.0.1:{image_server}"]})
    key = gateway.create_key("--credits", "5")
    url = f"http://127.0.0.1:{image_server}/a.png"
    answer = client(gateway, key).responses.create(model="gpt-native", input=image_input(url))
    assert answer.output_text == "Hello from the fake upstream."
    sent = upstream.received[-1].body["input"][0]["content"][1]
    assert sent["type"] == "input_image"
    assert sent["image_url"].startswith("data:image/png;base64,")
    assert base64.b64decode(sent["image_url"].split(",", 1)[1]) == png(16, 16)


def test_an_unlimited_request_is_sent_the_output_its_money_affords(
    gateway: GatewayProcess, upstream: FakeResponses
) -> None:
    key = gateway.create_key("--credits", "0.01")
    client(gateway, key).responses.create(model="gpt-native", input="Write a lot")
    limit = upstream.received[-1].body["max_output_tokens"]
    assert 256 <= limit < 1250  # $0.01 at $8 per million output tokens, less the prompt


def test_a_continued_conversation_reserves_its_stored_history(
    make: Callable[..., GatewayProcess], upstream: FakeResponses
) -> None:
    """The stored history goes upstream, so it bounds the reservation: a key that cannot
    afford a 400 KB history is refused before the upstream call, not charged its balance."""
    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "1")
    sdk = client(gateway, key)
    upstream.script = [Behavior(prompt_tokens=400_000, completion_tokens=5)]
    first = sdk.responses.create(model="gpt-5.2", input="x" * 400_000, max_output_tokens=16)
    assert len(rows(gateway, key)) == 1
    left = credits_of(gateway, key["key"])
    assert left["remaining_credits"] == Decimal("0.29993")  # 400,000 in, 5 out: 0.70007
    upstream.script = [Behavior(prompt_tokens=200_000, completion_tokens=5)]
    status, _, body = gateway.post(
        "/v1/responses",
        {"model": "gpt-5.2", "input": "Go on", "previous_response_id": first.id,
         "max_output_tokens": 16},
        key["key"],
    )  # fmt: skip
    assert status == 402, body
    assert len(upstream.received) == 1
    assert credits_of(gateway, key["key"]) == left
    assert len(ledger(gateway, key["id"])) == 1


def test_a_conversation_longer_than_max_request_bytes_is_a_400(
    make: Callable[..., GatewayProcess], upstream: FakeResponses
) -> None:
    gateway = make(stored_responses=True, stored_response_seconds=3600, max_request_bytes=8192)
    key = gateway.create_key("--credits", "10")
    first = client(gateway, key).responses.create(model="gpt-5.2", input="x" * 5000)
    assert len(rows(gateway, key)) == 1
    before = credits_of(gateway, key["key"])
    status, _, body = gateway.post(
        "/v1/responses",
        {"model": "gpt-5.2", "input": "y" * 4000, "previous_response_id": first.id},
        key["key"],
    )
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "previous_response_id"
    assert "max_request_bytes" in body["error"]["message"]
    assert len(upstream.received) == 1
    assert credits_of(gateway, key["key"]) == before
    assert len(ledger(gateway, key["id"])) == 1
    # a short continuation of the same conversation still fits
    status, _, body = gateway.post(
        "/v1/responses",
        {"model": "gpt-5.2", "input": "Go on", "previous_response_id": first.id},
        key["key"],
    )
    assert status == 200, body


def test_an_answer_that_cannot_be_stored_is_still_delivered(
    make: Callable[..., GatewayProcess], upstream: FakeResponses
) -> None:
    """Storing is the last step of a paid answer: when the write fails the client still gets
    the answer (a 500 would make an SDK retry and pay again), billed once."""
    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "10")
    with closing(sqlite3.connect(gateway.directory / "relaygate.db", timeout=10)) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON stored_responses"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()
    status, _, body = gateway.post(
        "/v1/responses", {"model": "gpt-5.2", "input": "Hello"}, key["key"]
    )
    assert status == 200, body
    assert body["output"][0]["content"][0]["text"] == "Hello from the fake upstream."
    assert body["store"] is False  # says what happened: it was not kept
    assert len(rows(gateway, key)) == 1
    assert gateway.logs().count("the route's last step failed") == 1
    assert gateway.get(f"/v1/responses/{body['id']}", key["key"])[0] == 404


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_stored_response_is_retrieved_and_deleted_by_its_own_account_only(
    make: Callable[..., GatewayProcess], upstream: FakeResponses, stream: bool
) -> None:
    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "10")
    sdk = client(gateway, key)
    upstream.default = Behavior(text="Paris.", prompt_tokens=30, completion_tokens=12)
    if stream:
        with sdk.responses.stream(model="gpt-5.2", input="Capital?", metadata={"t": "1"}) as s:
            list(s)
            answer = s.get_final_response()
    else:
        answer = sdk.responses.create(model="gpt-5.2", input="Capital?", metadata={"t": "1"})
    found = sdk.responses.retrieve(answer.id)
    assert (found.id, found.status, found.model, found.output_text) == (
        answer.id, "completed", "gpt-5.2", "Paris."
    )
    assert found.output[0].id == answer.output[0].id
    assert found.metadata == {"t": "1"}
    assert found.usage is not None
    assert found.usage.output_tokens == 12
    assert found.to_dict()["store"] is True
    # another account's key: 404 in the contract's shape, as for an unknown id
    other = client(gateway, gateway.create_key("--credits", "10"))
    calls = [(other.responses.retrieve, answer.id), (other.responses.delete, answer.id),
             (sdk.responses.retrieve, "resp_unknown")]  # fmt: skip
    for call, response_id in calls:
        with pytest.raises(openai.NotFoundError) as info:
            call(response_id)
        assert isinstance(info.value.body, dict)
        assert (info.value.body["type"], info.value.body["param"]) == (
            "not_found_error", "response_id"
        )
    assert sdk.responses.retrieve(answer.id).id == answer.id  # still there
    status, _, raw = http(
        "DELETE", f"{gateway.url}/v1/responses/{answer.id}", key=key["key"]
    )
    assert (status, json.loads(raw)) == (
        200, {"id": answer.id, "object": "response", "deleted": True}
    )
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answer.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(answer.id)
    with pytest.raises(openai.BadRequestError):  # nor continued
        sdk.responses.create(model="gpt-5.2", input="x", previous_response_id=answer.id)


def test_a_passed_through_answer_says_whether_relaygate_stores_it(
    make: Callable[..., GatewayProcess], upstream: FakeResponses
) -> None:
    """A Responses upstream is asked not to store, and says so; the client reads what relaygate
    does: ``store: true`` when it keeps the answer, in the body and in each streamed event that
    carries the Response object, and ``false`` when asked not to."""
    gateway = make(stored_responses=True, stored_response_seconds=3600)
    key = gateway.create_key("--credits", "10")
    sdk = client(gateway, key)
    upstream.default = Behavior(text="native answer", chunks=5)
    kept = sdk.responses.create(model="gpt-native", input="keep it")
    assert kept.store is True
    assert sdk.responses.retrieve(kept.id).store is True
    assert sdk.responses.create(model="gpt-native", input="x", store=False).store is False
    carriers = ("response.created", "response.in_progress", "response.completed")
    finals = {}
    for store in (True, False):
        with sdk.responses.stream(model="gpt-native", input="go", store=store) as stream:
            events = list(stream)
            finals[store] = stream.get_final_response()
        said = [e.response.store for e in events if e.type in carriers]  # type: ignore[union-attr]
        assert said == [store, store, store]
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert "".join(deltas) == finals[store].output_text == "native answer"
        assert finals[store].store is store
    assert all(r.body["store"] is False for r in upstream.received)  # asked not to store
    assert sdk.responses.retrieve(finals[True].id).store is True
    go_on = sdk.responses.create(
        model="gpt-native", input="go on", previous_response_id=finals[True].id
    )
    assert go_on.store is True
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(finals[False].id)


def test_sdk_delete_and_retrieve_without_storage_are_404(
    gateway: GatewayProcess, key: dict[str, Any]
) -> None:
    sdk = client(gateway, key)
    answer = sdk.responses.create(model="gpt-5.2", input="hi")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answer.id)
    sdk_delete = sdk.responses.delete
    with pytest.raises(openai.NotFoundError):
        sdk_delete(answer.id)
    status, _, _ = http("GET", f"{gateway.url}/v1/responses/{answer.id}")
    assert status == 401
