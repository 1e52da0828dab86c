"""A real gateway process with an admin token, shared by a module's admin API tests (each test
makes accounts of its own)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import catalog
from tests.support.gateway import GatewayProcess


@dataclass
class Admin:
    gateway: GatewayProcess
    token: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request to ``/admin/v1`` + ``path``; the admin token unless ``token`` is given
        (``None``: no Authorization header)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        request = urllib.request.Request(self.gateway.url + "/admin/v1" + path, data=data,
                                         method=method)
        request.add_header("content-type", "application/json")
        bearer = self.token if token == "" else token
        if bearer is not None:
            request.add_header("authorization", f"Bearer {bearer}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, head, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, head, payload = exc.code, dict(exc.headers), exc.read()
        return status, head, json.loads(payload) if payload else None

    def ok(self, method: str, path: str, body: Any = None, status: int = 200,
           **kwargs: Any) -> Any:
        got, _, answer = self.call(method, path, body, **kwargs)
        assert got == status, answer
        return answer

    def state(self, account_id: str) -> tuple[Any, ...]:
        """An account, its keys and the audit log's length: what bad input must not change."""
        account = self.ok("GET", f"/accounts/{account_id}")
        keys = self.ok("GET", f"/accounts/{account_id}/keys")["data"]
        audit = self.ok("GET", "/audit?limit=200")["data"]
        return account, keys, len(audit)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    directory = tmp_path_factory.mktemp("admin-gw")
    config = catalog("http://127.0.0.1:9/v1", key_refresh_seconds=0.1)
    gateway = GatewayProcess(directory, config).start()
    try:
        created = json.loads(
            gateway.cli("admin-token", "create", "--name", "tests", "--json").stdout
        )
        yield Admin(gateway, created["token"])
    finally:
        gateway.stop()
