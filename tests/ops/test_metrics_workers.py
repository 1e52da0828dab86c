"""``relaygate serve --workers 2``: one ``/metrics`` for both workers, whichever answers."""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.support.gateway import GatewayProcess
from tests.support.services import REDIS_URL, need

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}
REFUSED = 'relaygate_responses_total{status="401",type="authentication_error"}'
MOST_REQUESTS = 2000
AT_ONCE = 8


def refuse(gateway: GatewayProcess) -> int:
    status, _, _ = gateway.post("/v1/chat/completions", {}, "sk-not-a-key-0123456789")
    return status


def refusals_by_worker(folder: Path) -> dict[str, float]:
    """The 401s each worker counted, read from its own multiprocess file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        total = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == "relaygate_responses_total" and labels.get("status") == "401":
                total += value
        counts[path.stem.removeprefix("counter_")] = total
    return counts


def scraped_refusals(gateway: GatewayProcess) -> float:
    status, _, body = gateway.operator_get("/metrics")
    assert status == 200
    text = body.decode()
    assert "_created" not in text
    match = re.search(re.escape(REFUSED) + r" (\S+)", text)
    return float(match.group(1)) if match else 0.0


def test_every_scrape_counts_both_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("Redis", 6379)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where serve makes its metrics folder
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    config = {"models": SIMULATOR, "redis_url": REDIS_URL,
              "redis_key_prefix": f"rgtest-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    gateway = GatewayProcess(tmp_path, config, args=("--workers", "2")).start()
    try:
        # the port answers once one worker is up; the other may start seconds later
        deadline = time.monotonic() + 60
        while gateway.logs().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, gateway.log_tail()
            time.sleep(0.1)
        (folder,) = temp.glob("relaygate-metrics-*")
        sent = 0
        # each request on a new connection, AT_ONCE at a time: while one worker is busy with
        # some, the other accepts the rest (one at a time, a loaded machine's kernel can hand
        # every connection to the same worker); go on until both answered some
        with ThreadPoolExecutor(AT_ONCE) as pool:
            while sent < MOST_REQUESTS:
                refused = pool.map(lambda _: refuse(gateway), range(AT_ONCE))
                assert list(refused) == [401] * AT_ONCE
                sent += AT_ONCE
                by_worker = refusals_by_worker(folder)
                if len([n for n in by_worker.values() if n > 0]) == 2:
                    break
        assert len([n for n in by_worker.values() if n > 0]) == 2, by_worker
        assert sum(by_worker.values()) == sent
        # a scrape answered by either worker shows the total (new connection each time)
        scrapes = [scraped_refusals(gateway) for _ in range(12)]
        assert scrapes == [sent] * 12
    finally:
        gateway.stop()
    assert list(temp.iterdir()) == []  # the folder is removed at exit
