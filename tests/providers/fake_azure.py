"""A fake Azure OpenAI resource, written from Azure's REST reference: the OpenAI fake behind
``/openai/deployments/{deployment}/chat/completions?api-version=...`` with the ``api-key``
header (Azure's 401 without it, 404 ``DeploymentNotFound`` for another deployment, 400 without
``api-version``)."""

from __future__ import annotations

from aiohttp import web

from tests.support.fake_openai import Behavior, FakeOpenAI

API_KEY = "azure-upstream-SECRET-0123456789"
DEPLOYMENT = "gpt-5-prod"
API_VERSION = "2024-10-21"


class FakeAzure(FakeOpenAI):
    """The OpenAI fake's behaviours, reached the Azure way; ``queries`` records each request's
    query string."""

    def __init__(self, default: Behavior | None = None) -> None:
        super().__init__(default)
        self.queries: list[dict[str, str]] = []

    @property
    def resource_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_handle)

    async def _azure_handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        if request.headers.get("api-key") != API_KEY:
            return _error(401, "401", "Access denied due to invalid subscription key.")
        if not request.query.get("api-version"):
            return _error(400, "MissingApiVersionParameter", "The api-version is required.")
        if request.match_info["deployment"] != DEPLOYMENT:
            return _error(404, "DeploymentNotFound", "The API deployment does not exist.")
        return await self._handle(request)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
