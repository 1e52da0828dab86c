"""The first-run setup link: printed while no admin exists, works once, for a limited time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from relaygate.accounts import setup
from relaygate.errors import InvalidRequest, NotFound
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore
from tests.console.conftest import FAST_HASH, start_console
from tests.console.support import PASSWORD, setup_link
from tests.store.test_store import backend, store
from tests.support.gateway import http

SETTINGS = Settings(**FAST_HASH)  # type: ignore[arg-type]


__all__ = ["backend", "store"]  # the store tests' fixtures: SQLite, and PostgreSQL


async def test_the_link_makes_one_admin_once(store: SqlStore) -> None:
    token = await setup.open_setup(store)
    assert token is not None
    assert await setup.link_is_live(store, token)
    with pytest.raises(InvalidRequest):  # a bad password does not spend the link
        await setup.complete_setup(store, SETTINGS, token, "a@example.com", "short")
    admin = await setup.complete_setup(store, SETTINGS, token, "a@example.com", PASSWORD)
    assert admin.role == "admin"
    assert not await setup.link_is_live(store, token)
    with pytest.raises(NotFound):
        await setup.complete_setup(store, SETTINGS, token, "b@example.com", PASSWORD)
    assert await setup.open_setup(store) is None  # an admin exists: no more links


async def test_a_link_whose_admin_could_not_be_made_works_again(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await setup.open_setup(store)
    assert token is not None
    real_create = setup.users.create_user

    async def email_taken_meanwhile(*args: object, **kwargs: object) -> object:
        # what create_user raises when another user took the email after the link's check
        raise InvalidRequest("email: a user with this email exists", param="email")

    monkeypatch.setattr(setup.users, "create_user", email_taken_meanwhile)
    with pytest.raises(InvalidRequest):
        await setup.complete_setup(store, SETTINGS, token, "a@example.com", PASSWORD)
    monkeypatch.setattr(setup.users, "create_user", real_create)
    assert await setup.link_is_live(store, token)  # not spent: the operator can still use it
    admin = await setup.complete_setup(store, SETTINGS, token, "b@example.com", PASSWORD)
    assert admin.role == "admin"


async def test_concurrent_uses_make_one_admin(store: SqlStore) -> None:
    token = await setup.open_setup(store)
    assert token is not None
    results = await asyncio.gather(
        *(setup.complete_setup(store, SETTINGS, token, f"u{i}@example.com", PASSWORD)
          for i in range(5)), return_exceptions=True,
    )  # fmt: skip
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, NotFound) for r in results if isinstance(r, BaseException))


async def test_a_link_expires_and_a_new_one_replaces_it(store: SqlStore) -> None:
    old = await setup.open_setup(store, now=1_000)
    assert old is not None
    assert not await setup.link_is_live(store, old, now=1_000 + setup.SETUP_SECONDS)
    new = await setup.open_setup(store)
    assert new is not None
    assert not await setup.link_is_live(store, old, now=1_001)
    assert await setup.link_is_live(store, new)
    for bad in ("", "x", "A" * 43, "../" * 20):
        assert not await setup.link_is_live(store, bad)


def test_serve_prints_the_link_and_it_works_once_over_http(tmp_path: Path) -> None:
    gateway = start_console(tmp_path)
    try:
        link = setup_link(gateway)
        assert link.startswith(gateway.url + "/console/setup/")
        with httpx.Client() as client:
            assert client.get(link).status_code == 200
            form = {"email": "first@example.com", "password": PASSWORD,
                    "password_again": PASSWORD + "x"}
            differ = client.post(link, data=form)
            assert differ.status_code == 400
            form["password_again"] = PASSWORD
            assert client.post(link, data=form).status_code == 303
            assert client.get(link).status_code == 404
            assert client.post(link, data={**form, "email": "second@example.com"}
                               ).status_code == 404
    finally:
        gateway.stop()
    restarted = start_console(tmp_path)  # an admin exists now: no new link
    try:
        assert "/console/setup/" not in restarted.logs().split("Started server process")[-1]
    finally:
        restarted.stop()


def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    gateway = start_console(tmp_path, console=False)
    try:
        assert "/console/setup/" not in gateway.logs()
        assert http("GET", gateway.url + "/console/sign-in")[0] == 404
    finally:
        gateway.stop()


def test_a_402_leads_to_the_console_billing_page(tmp_path: Path) -> None:
    gateway = start_console(tmp_path)
    try:
        key = gateway.create_key("--credits", "0")["key"]
        status, _, raw = http("POST", gateway.url + "/v1/chat/completions",
                              {"model": "relaygate-simulator",
                               "messages": [{"role": "user", "content": "hi"}]}, key=key)
        assert status == 402
        import json

        link = json.loads(raw)["error"]["fallback_suggestion"]
        assert link == gateway.url + "/console/billing"
        status, _, page = http("GET", link)  # the sign-in page, then back to billing
        assert status == 200
        assert b'name="next" value="/console/billing"' in page
    finally:
        gateway.stop()
