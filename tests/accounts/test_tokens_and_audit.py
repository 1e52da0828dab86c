"""Admin tokens and the audit log at the business layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from relaygate.accounts import accounts, audit, tokens
from relaygate.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from relaygate.keys.cache import KeyCache
from relaygate.store.sql import SqlStore
from tests.accounts.conftest import ADMIN, CLI, member, snapshot


async def test_a_token_verifies_as_an_admin_until_revoked(store: SqlStore) -> None:
    record, token = await tokens.create_admin_token(store, CLI, "ci")
    assert token.startswith("rga-")
    assert token not in str(await snapshot(store))
    principal = await tokens.verify_admin_token(store, token, "10.0.0.1")
    assert principal is not None
    assert (principal.via, principal.id, principal.role, principal.address) == (
        "admin_token", record.id, "admin", "10.0.0.1")
    assert await tokens.verify_admin_token(store, "sk-not-an-admin-token", None) is None
    with pytest.raises(AuthenticationFailed):
        await tokens.verify_admin_token(store, token + "x", None)
    await tokens.revoke_admin_token(store, CLI, record.id)
    with pytest.raises(AuthenticationFailed):
        await tokens.verify_admin_token(store, token, None)
    with pytest.raises(NotFound):
        await tokens.revoke_admin_token(store, CLI, record.id)
    assert [t.id for t in await tokens.list_admin_tokens(store, CLI)] == [record.id]


async def test_an_admin_token_is_never_an_api_key(store: SqlStore) -> None:
    _, token = await tokens.create_admin_token(store, CLI, "ci")
    cache = KeyCache(store, 1.0)
    await cache.refresh()
    with pytest.raises(AuthenticationFailed):
        cache.authenticate(f"Bearer {token}".encode())


async def test_bad_tokens_are_not_created(store: SqlStore) -> None:
    before = await snapshot(store)
    with pytest.raises(InvalidRequest):
        await tokens.create_admin_token(store, CLI, "n" * 201)
    with pytest.raises(InvalidRequest):
        await tokens.create_admin_token(store, CLI, " ")
    with pytest.raises(PermissionDenied):
        await tokens.create_admin_token(store, member("acct_x"), "mine")
    assert await snapshot(store) == before


async def test_the_audit_log_pages_newest_first_and_a_member_reads_its_own(
    store: SqlStore,
) -> None:
    mine = await accounts.create_account(store, ADMIN, name="Mine")
    theirs = await accounts.create_account(store, CLI, name="Theirs")
    await accounts.update_account(store, ADMIN, mine.id, {"rpm": 5})
    await audit.record(store, member(mine.id), "session.sign_in", "user", "usr_member",
                       {"ok": True}, account_id=mine.id)
    seen = []
    before = None
    while True:
        rows, more = await audit.read(store, ADMIN, before=before, limit=3)
        seen += rows
        if not more:
            break
        before = rows[-1].id
    assert [e.action for e in seen] == [
        "session.sign_in", "account.update", "account.create", "account.create"]
    assert [e.actor for e in seen] == ["user:usr_member", "admin_token:atk_test", "cli",
                                       "admin_token:atk_test"]
    assert seen[1].detail == {"rpm": 5}
    assert seen[0].address == "127.0.0.2"
    own, _ = await audit.read(store, member(mine.id), before=None, limit=10)
    assert {e.account_id for e in own} == {mine.id}
    assert theirs.id not in {e.target_id for e in own}
