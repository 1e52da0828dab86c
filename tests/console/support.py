"""A console user over HTTP (httpx, no JavaScript): signs in, reads pages, sends forms with
the page's CSRF token, as a browser without scripts would."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess

PASSWORD = "correct-horse-battery-staple"
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
_SETUP = re.compile(r"(http://\S+/console/setup/[A-Za-z0-9_-]{43})")


def setup_link(gateway: GatewayProcess) -> str:
    """The one-time setup link ``relaygate serve`` printed (the last one in its log)."""
    found = _SETUP.findall(gateway.logs())
    assert found, gateway.logs()
    return str(found[-1])


@dataclass
class User:
    gateway: GatewayProcess
    client: httpx.Client = field(init=False)
    csrf: str = ""

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.gateway.url, follow_redirects=False, timeout=30)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.get(path, **kwargs)
        found = _CSRF.search(response.text) if response.headers.get(
            "content-type", "").startswith("text/html") else None
        if found and found.group(1):
            self.csrf = found.group(1)
        return response

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:2000])
        return response.text

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=form, **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        response = self.post("/console/sign-in", {"email": email, "password": password},
                             csrf=False)
        assert response.status_code == 303, response.text[:2000]
        home = self.get("/console/")
        assert home.status_code == 303
        self.page(home.headers["location"])
        return response


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition did not hold in time")
