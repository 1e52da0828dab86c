"""Log levels: ``log_level`` is relaygate's own; libraries stay at warning unless named."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import GatewayProcess

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}


def served_logs(directory: Path, **config: object) -> str:
    gateway = GatewayProcess(directory, {"models": SIMULATOR, **config}).start()
    try:
        key = gateway.create_key("--credits", "1")["key"]
        assert gateway.get("/v1/models", key)[0] == 200
    finally:
        gateway.stop()
    return gateway.logs()


def logger_names(logs: str) -> set[str]:
    """The logger of each record line (``date time LEVEL name: message``)."""
    names = set()
    for line in logs.splitlines():
        parts = line.split(" ", 4)
        if len(parts) == 5 and parts[3].endswith(":") and parts[2].isupper():
            names.add(parts[3][:-1])
    return names


def test_debug_shows_relaygate_lines_and_no_library_internals(tmp_path: Path) -> None:
    logs = served_logs(tmp_path, log_level="debug")
    names = logger_names(logs)
    assert " DEBUG relaygate: key cache: " in logs, logs
    assert " DEBUG relaygate: model relaygate-simulator: upstreams " in logs
    assert not {n for n in names if n.split(".")[0] in {"aiosqlite", "sqlalchemy", "asyncio"}}
    # the server's start-up lines are the server's, not "uvicorn.error"
    assert "uvicorn" not in " ".join(names), names
    assert " INFO relaygate.server: Application startup complete." in logs


def test_a_library_named_in_log_debug_loggers_follows_log_level(tmp_path: Path) -> None:
    logs = served_logs(tmp_path, log_level="debug", log_debug_loggers=["aiosqlite"])
    assert " DEBUG aiosqlite: " in logs


def test_info_hides_relaygate_debug_lines(tmp_path: Path) -> None:
    logs = served_logs(tmp_path, log_level="info")
    assert " DEBUG " not in logs
    assert " INFO relaygate.server: Application startup complete." in logs
