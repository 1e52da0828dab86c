"""``relaygate serve`` on a port another process listens on: one line, a failing exit status,
and nothing that claims to serve."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import GatewayProcess

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_busy_port_ends_serve_with_one_line_before_any_banner(
    tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "relaygate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'relaygate.db'}",
                # --workers 2 needs Redis in the config; the port is taken before it is used
                "redis_url": "redis://127.0.0.1:6379/0",
                "models": SIMULATOR,
            }
        )
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "relaygate", "serve", "--config", str(config),
             "--port", str(port), "--workers", str(workers)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"relaygate: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (another process listens there: stop it or pick another --port)"
    ]
    assert result.stdout == ""
    assert not (tmp_path / "relaygate.db").exists()  # nothing was opened either


def test_serve_still_serves_on_a_free_port_and_says_so_once_bound(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"models": SIMULATOR}).start()
    try:
        assert gateway.get("/health")[0] == 200
    finally:
        gateway.stop()
    lines = gateway.logs().splitlines()
    assert lines[0].startswith("relaygate: creating a new database: ")  # the first start
    assert lines[1].startswith(f"relaygate: serving http://127.0.0.1:{gateway.port} with store")
