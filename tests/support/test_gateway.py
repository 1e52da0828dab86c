"""The ``relaygate serve`` helper: a start that fails ends its process, closes its log, and says
why with the tail of what that start logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

EARLIER_RUN = "a line an earlier run of this gateway logged"


def test_a_gateway_that_exits_at_once_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"log_level": "loud"})
    gateway.log_path.write_text(f"{EARLIER_RUN}\n" * 100)
    with pytest.raises(RuntimeError) as caught:
        gateway.start()
    message = str(caught.value)
    assert "exited at start-up" in message
    assert "log_level: must be one of" in message  # the gateway's own one-line error
    assert EARLIER_RUN not in message  # the tail of this start, not the whole file
    assert gateway._log.closed


def test_a_gateway_that_does_not_start_in_time_is_ended(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {})
    with pytest.raises(RuntimeError, match="did not start within 0 s"):
        gateway.start(timeout=0)
    assert gateway.process is not None
    assert gateway.process.poll() is not None
    assert gateway._log.closed
