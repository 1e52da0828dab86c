"""The built-in catalog (used without a config file) and the models no upstream serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relaygate.settings.root import Settings

SIMULATOR_MODEL = "relaygate-simulator"


def unserved_models(settings: Settings) -> list[str]:
    """Models that can answer nothing but 503 "no upstream configured": no upstream of their
    own and none among their fallbacks (``gpt-5.2`` of the built-in catalog without
    ``OPENAI_API_KEY``, say)."""
    models = settings.models
    return [
        name
        for name, model in models.items()
        if not model.upstreams and not any(models[f].upstreams for f in model.fallbacks)
    ]


def default_catalog(env: Mapping[str, str]) -> dict[str, Any]:
    """The catalog used without a config file: contract models go to OpenAI when
    ``OPENAI_API_KEY`` is set, and the simulator model works with no key at all."""

    def openai_upstreams(model: str) -> list[dict[str, Any]]:
        if not env.get("OPENAI_API_KEY"):
            return []
        return [
            {
                "provider": "openai",
                "name": "openai",
                "base_url": env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                "api_key": env["OPENAI_API_KEY"],
                "model": model,
            }
        ]

    return {
        "gpt-5.2": {
            "pricing": {"input": "1.75", "cached_input": "0.175", "output": "14.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.2"),
        },
        "gpt-5.5": {
            "pricing": {"input": "5.0", "cached_input": "0.5", "output": "30.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.5"),
        },
        SIMULATOR_MODEL: {
            "pricing": {"input": "0.10", "cached_input": "0.01", "output": "0.40"},
            "max_output_tokens": 4096,
            "vision": True,
            "upstreams": [{"provider": "simulator", "name": "simulator"}],
        },
    }
