"""``image_tokens`` from the image's real size when the upstream does not report it (issue 15,
item 9), in the usage the client gets (the OpenAI SDK, streamed or not) and in the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

import openai
import pytest

from relaygate.accounting.estimate import prompt_token_bound
from relaygate.media.tokens import MAX_IMAGE_TOKENS, bills_by_pixels, image_tokens
from tests.media.samples import data_url, jpeg, one_image, png, webp_lossy
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


# --- the reservation -------------------------------------------------------------------------


def bound(
    url: str, detail: str | None = None, per_image: int = MAX_IMAGE_TOKENS, pixels: bool = False
) -> int:
    """The prompt-token bound's image part for one image (the body's bytes left out)."""
    request, _ = one_image(url, detail)
    return prompt_token_bound(request, 0, per_image, pixels) - 1


def test_an_image_inside_the_request_is_reserved_at_its_real_size() -> None:
    assert bound(data_url(png(300, 200))) == 255
    assert bound(data_url(png(1024, 1024)), "high") == 765
    assert bound(data_url(jpeg(2048, 4096))) == 1105
    assert bound(data_url(webp_lossy(640, 480))) == image_tokens(640, 480)
    assert bound(data_url(png(1024, 1024)), "low") == 85


def test_an_image_whose_size_is_not_known_yet_is_reserved_at_the_maximum() -> None:
    assert bound("https://images.example/cat.png") == MAX_IMAGE_TOKENS
    # a JPEG whose frame header lies past what is read before admission
    assert bound(data_url(jpeg(300, 200, pad=40 * 1024))) == MAX_IMAGE_TOKENS
    assert bound("data:image/png,%89PNG") == MAX_IMAGE_TOKENS  # not base64
    assert bound("data:image/png;base64,R0lGODlhAQABAAAAADs=") == MAX_IMAGE_TOKENS  # a GIF
    # a model with an estimate of its own (another provider's formula) keeps it
    assert bound(data_url(png(300, 200)), per_image=2000) == 2000


def test_an_image_for_an_upstream_that_counts_pixels_is_reserved_by_them() -> None:
    """Anthropic counts width x height / 750 (at most ~1,600): a 1092 x 1092 image is 1,590
    tokens where the tile formula gives 765; ``detail`` means nothing there."""
    assert bound(data_url(png(1092, 1092)), pixels=True) == 1590
    assert bound(data_url(png(1092, 1092)), "low", pixels=True) == 1590
    assert bound(data_url(png(4000, 4000)), pixels=True) == 1600  # scaled down first
    assert bound(data_url(png(100, 100)), pixels=True) == image_tokens(100, 100)  # the larger
    assert bound("https://images.example/cat.png", pixels=True) == 1600
    assert bound(data_url(png(1092, 1092)), per_image=2000, pixels=True) == 2000


def test_a_models_upstreams_tell_whether_it_counts_pixels() -> None:
    assert not bills_by_pixels(["openai", "azure", "simulator"])
    assert bills_by_pixels(["openai", "anthropic"])
    assert bills_by_pixels(["gemini"])


def test_a_small_image_is_affordable_where_the_maximum_was_not(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    """1 USD per 1000 tokens: 1.3 USD of credit covers a 300x200 image (255 tokens) and the
    text, not the 1,445 tokens reserved for an image of unknown size."""
    fake = {"provider": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-0123"}
    models = {"dear": {"pricing": {"input": "1000", "output": "1000"}, "vision": True,
                       "upstreams": [fake]}}  # fmt: skip
    gateway = make_gateway(models=models)
    key = gateway.create_key("--credits", "1.3")["key"]
    upstream.default = Behavior(prompt_tokens=300, completion_tokens=1)
    body = {"model": "dear", "max_tokens": 1, "messages": asking(data_url(png(300, 200)), "auto")}
    status, _, answer = gateway.post("/v1/chat/completions", body, key=key)
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens_details"]["image_tokens"] == 255
    far = {**body, "messages": asking("https://images.example/cat.png", "auto")}
    status, _, answer = gateway.post("/v1/chat/completions", far, key=key)
    assert status == 402, answer  # size unknown before the fetch: the maximum is reserved
