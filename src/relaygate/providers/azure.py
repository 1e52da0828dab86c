"""Azure OpenAI: OpenAI's chat completions behind Azure deployments.

The request and the answer are OpenAI's (this provider reuses :class:`OpenAIProvider`); Azure
differs in where it is sent and how it is authenticated::

    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
    api-key: {api_key}

``base_url`` is the resource's endpoint (``https://RESOURCE.openai.azure.com``) and ``model`` is
the deployment's name; both are required. Options: ``api_version`` (default
:data:`DEFAULT_API_VERSION`), ``responses`` (pass ``POST /v1/responses`` through to the
resource's Responses API, ``{base_url}/openai/v1/responses``; default false: translated).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from relaygate.providers.openai import OpenAIProvider
from relaygate.settings import UpstreamSettings

DEFAULT_API_VERSION = "2024-10-21"


class AzureOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    api_version: str = DEFAULT_API_VERSION
    responses: bool = False
    """Pass ``POST /v1/responses`` requests through to the resource's Responses API
    (``{base_url}/openai/v1/responses``, the model being the deployment)."""


class AzureProvider(OpenAIProvider):
    """OpenAI on Azure: deployments, ``api-version``, the ``api-key`` header."""

    name = "azure"
    supports_top_k = False

    def __init__(self, settings: UpstreamSettings, session: Any) -> None:
        super().__init__(settings, session)
        self.options = msgspec.convert(settings.options, AzureOptions)

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        try:
            options = msgspec.convert(settings.options, AzureOptions)
        except msgspec.ValidationError as exc:
            raise ValueError(f"options: {exc} (azure takes: api_version, responses)") from None
        if not options.api_version.strip():
            raise ValueError("options.api_version: must not be empty")
        if not settings.base_url:
            raise ValueError(
                "base_url: azure needs the resource endpoint,"
                " e.g. https://RESOURCE.openai.azure.com"
            )
        if not settings.model:
            raise ValueError("model: azure needs the deployment's name")

    def url(self) -> str:
        base = (self.settings.base_url or "").rstrip("/")
        deployment = quote(self.settings.model or "", safe="")
        version = quote(self.options.api_version, safe="")
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    @property
    def speaks_responses(self) -> bool:
        return self.options.responses

    def responses_url(self) -> str:
        base = (self.settings.base_url or "").rstrip("/")
        return f"{base}/openai/v1/responses"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.settings.api_key:
            headers["api-key"] = self.settings.api_key
        return headers
