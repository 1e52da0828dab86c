"""What the journal tests share: a ledger row of the one test key (the accounting conftest's
``store`` holds that key)."""

from __future__ import annotations

from relaygate.store.records import LedgerRow


def _row(n: int, status: str = "ok", cost: int = 10, request_id: str = "") -> LedgerRow:
    return LedgerRow(
        request_id=request_id or f"req-{n}",
        key_id="key-1",
        model="m",
        upstream="u",
        upstream_model="m",
        created_at=n,
        status=status,
        cost_micros=cost,
        latency_ms=1,
        stream=False,
    )

