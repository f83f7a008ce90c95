"""Load and soak (slow: MNEMO_SLOW=1): the quick mode of bench/load — 64 concurrent streaming
clients for 20 s against a real ``mnemo up`` — finishes with no error, no lost or duplicated
exchange, and no leaked connection. Memory and descriptor numbers are reported, not asserted
beyond a leak bound: the machine is shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_sixty_four_streaming_clients_lose_nothing_and_leak_nothing(tmp_path: Path) -> None:
    results = run.main(["--quick", "--out", str(tmp_path)])
    assert results["errors"] == 0 and results["status_5xx"] == 0, results["error_kinds"]
    assert results["exchanges_sent"] > 0
    assert results["exchanges_stored"] == results["exchanges_sent"] and results["exchanges_lost"] == 0
    assert results["memories_duplicated"] == 0
    before, after = results["process"]["before"], results["process"]["after"]
    assert after["tcp"].get("ESTABLISHED", 0) <= before["tcp"].get("ESTABLISHED", 0) + 2
    # A leak would grow with the ~1,000 requests; the queue's Redis pool may still grow to the
    # highest concurrency seen (bounded by the 64 clients), everything else must be back as before.
    assert after["unix_sockets"] <= results["clients"] + 8
    assert after["fds"] - after["unix_sockets"] <= before["fds"] - before["unix_sockets"] + 4
    assert (tmp_path / "load.json").exists() and (tmp_path / "load.md").exists()
