"""``image_tokens`` from the image's real size when the upstream does not report it (issue 15,
item 9), in the usage the client gets (the OpenAI SDK, streamed or not) and in the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

import openai
import pytest

from relaygate.media.tokens import image_tokens
from tests.media.samples import data_url, png
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess


def asking(url: str, detail: str) -> list[dict[str, Any]]:
    image = {"url": url, "detail": detail}
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": image}]
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize(
    ("width", "height", "detail", "expected"),
    [
        pytest.param(1024, 1024, "auto", 765, id="1024x1024-4-tiles"),
        pytest.param(300, 200, "high", 255, id="300x200-1-tile"),
        pytest.param(2048, 4096, "high", 1105, id="2048x4096-6-tiles"),
        pytest.param(1024, 1024, "low", 85, id="low-detail"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_image_tokens_come_from_the_real_size_when_the_upstream_is_silent(
    make_gateway: Callable[..., GatewayProcess],
    upstream: FakeOpenAI,
    width: int,
    height: int,
    detail: str,
    expected: int,
    stream: bool,
) -> None:
    assert image_tokens(width, height, detail) == expected  # OpenAI's published examples
    upstream.default = Behavior(prompt_tokens=2000)  # reports no image tokens
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10")["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    messages = asking(data_url(png(width, height)), detail)
    with client:
        if stream:
            chunks = client.chat.completions.create(
                model="gpt-5.2", messages=messages,  # type: ignore[arg-type]
                stream=True, stream_options={"include_usage": True},
            )  # fmt: skip
            usage = [c.usage for c in chunks if c.usage is not None][-1]
        else:
            answer = client.chat.completions.create(model="gpt-5.2", messages=messages)  # type: ignore[arg-type]
            assert answer.usage is not None
            usage = answer.usage
    assert usage.prompt_tokens == 2000
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.image_tokens == expected
    gateway.wait_until(lambda: ledger_image_tokens(gateway) == [expected])


def ledger_image_tokens(gateway: GatewayProcess) -> list[int]:
    with closing(sqlite3.connect(gateway.directory / "relaygate.db")) as db:
        return [row[0] for row in db.execute("SELECT image_tokens FROM ledger")]


def test_image_tokens_are_never_more_than_the_prompt_tokens(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10")["key"]
    upstream.default = Behavior(prompt_tokens=40)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with client:
        answer = client.chat.completions.create(
            model="gpt-5.2", messages=asking(data_url(png(1024, 1024)), "high"),  # type: ignore[arg-type]
        )  # fmt: skip
    assert answer.usage is not None
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.image_tokens == 40
