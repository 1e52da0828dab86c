"""Admin changes reach every replica at once through Redis (their own polling is set to 30 s
here, so only the announcement can be what carries them), on PostgreSQL."""

from __future__ import annotations

import json

from tests.admin.conftest import Admin
from tests.scale.conftest import Replicas, replicas, shared_pg, shared_redis
from tests.support.gateway import http

__all__ = ["replicas", "shared_pg", "shared_redis"]


def test_a_key_made_and_revoked_on_one_replica_applies_on_the_other(replicas: Replicas
                                                                     ) -> None:
    first, second = replicas(2, key_refresh_seconds=30)
    token = json.loads(first.cli("admin-token", "create", "--name", "t", "--json").stdout)
    admin = Admin(first, token["token"])
    account = admin.ok("POST", "/accounts", {"name": "Replicated"}, status=201)
    key = admin.ok("POST", f"/accounts/{account['id']}/keys", {"name": "k"}, status=201)

    def status_on_second() -> int:
        return http("GET", second.url + "/v1/models", key=key["key"])[0]

    second.wait_until(lambda: status_on_second() == 200, timeout=5,
                      message="the new key reaching the other replica")
    admin.ok("DELETE", f"/keys/{key['id']}")
    second.wait_until(lambda: status_on_second() == 401, timeout=5,
                      message="the revocation reaching the other replica")
