"""The outage logger: first failure in detail, a count per interval, one line at recovery."""

from __future__ import annotations

import logging

import pytest

from relaygate.outage import Outage


def test_an_outage_logs_its_start_a_count_per_interval_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = Outage(logging.getLogger("test.outage"), "redis", interval=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.outage")
    outage.ok()  # nothing failed: silent
    for i in range(3000):  # 3,000 failures over 150 s
        now[0] = i * 0.05
        outage.failed(ConnectionError("refused"), "admission")
    outage.ok()
    outage.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    assert messages[0].startswith("redis unreachable (admission): ConnectionError: refused")
    assert caplog.records[0].exc_info is not None  # the first failure in detail
    assert messages[1] == "redis still failing: 1201 failures in the last 60 s"  # the first too
    assert messages[2] == "redis still failing: 1200 failures in the last 60 s"
    assert messages[3].startswith("redis is back after 150.0 s (3000 failures)")
