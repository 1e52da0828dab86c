"""The ``images`` settings: defaults, the config file, errors naming the key, the README."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from relaygate.errors import ConfigError
from relaygate.settings import ImageSettings, Settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_contract() -> None:
    images = Settings().images
    assert images == ImageSettings()
    assert images.max_bytes == 10 * 1024 * 1024
    assert images.allow_internal == []
    assert images.forward_urls is False


def test_read_from_the_config_file() -> None:
    settings = settings_from_mapping(
        {"images": {"max_bytes": 1000, "max_images": 4, "fetch_timeout": 2.5,
                    "allow_internal": ["10.0.0.0/8", "images.corp:8080", "[::1]:9000"],
                    "forward_urls": True, "cache_bytes": 0}},
        "relaygate.yaml",
        {},
    )
    images = settings.images
    assert (images.max_bytes, images.max_images, images.fetch_timeout) == (1000, 4, 2.5)
    assert images.allow_internal == ["10.0.0.0/8", "images.corp:8080", "[::1]:9000"]
    assert (images.forward_urls, images.cache_bytes) == (True, 0)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ({"allow_internal": ["10.0.0.0/8", "two words"]},
         "relaygate.yaml: images: allow_internal[1]: 'two words' is not a host name"),
        ({"allow_internal": ["127.0.0.1:0"]},
         "relaygate.yaml: images: allow_internal[0]: '127.0.0.1:0' has an invalid port"),
        ({"max_bytes": 0}, "relaygate.yaml: images.max_bytes: Expected `int` >= 1"),
        ({"max_redirects": 11}, "relaygate.yaml: images.max_redirects: Expected `int` <= 10"),
        ({"max_bytez": 1}, "relaygate.yaml: images: Object contains unknown field `max_bytez`"),
    ],
)
def test_errors_name_the_file_and_key(images: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"images": images}, "relaygate.yaml", {})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(expected), message


@pytest.mark.parametrize("name", [f.name for f in msgspec.structs.fields(ImageSettings)])
def test_every_image_setting_is_in_the_readme(name: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"`{re.escape(name)}`", readme), f"images.{name} is not in README.md"
