"""bench/load/probe: how /proc/<pid>/smaps mappings are grouped by what holds them."""

from __future__ import annotations

import os
from pathlib import Path

from bench.load import probe

DATA = Path("/srv/data")


def test_mappings_are_grouped_by_what_holds_them() -> None:
    assert probe.classify("[heap]", DATA) == "Python heap (brk)"
    assert probe.classify("", DATA).startswith("anonymous")
    assert probe.classify("/home/u/.cache/mnemo/minilm-fused-x/word_embeddings_q.bin", DATA).startswith("model files")
    assert probe.classify(str(DATA / "qdrant-edge/segments/page_0.dat"), DATA).startswith("store files")
    so = "/v/lib/python3.11/site-packages/onnxruntime/capi/onnxruntime_pybind11_state.so"
    assert probe.classify(so, DATA) == "library: onnxruntime"
    assert probe.classify("/usr/lib/x86_64-linux-gnu/libc.so.6", DATA) == "library: system"


def test_a_snapshot_of_this_process_accounts_for_its_resident_memory() -> None:
    shot = probe.snapshot(os.getpid(), DATA)
    assert shot.rss_mb > 0 and shot.threads >= 1
    assert "library: python" in shot.memory or "library: system" in shot.memory
    # smaps' per-mapping Rss sums to the process's resident set (rounding aside)
    assert abs(sum(shot.memory.values()) - shot.rss_mb) < 0.05 * shot.rss_mb + 1


def test_the_soaks_growth_is_split_into_the_data_and_what_the_process_kept() -> None:
    from bench.load import report

    cold, after, restarted = {"rss_mb": 200.0}, {"rss_mb": 300.0}, {"rss_mb": 280.0}
    lines = report.growth_lines({"exchanges_stored": 8192}, cold, after, restarted)
    assert "÷ a new process on the same data: 1.07" in lines[0]
    assert "+80.0 MB more than at ready, 10.0 KB per exchange stored" in lines[1]
    assert report.growth_lines({"exchanges_stored": 1}, cold, after, None) == []


def test_the_read_soak_report_gives_rss_per_minute_and_its_ratio() -> None:
    from bench.load import read_soak

    def shot(rss: float, heap: float) -> dict[str, object]:
        memory = {"Python heap (brk)": heap, "anonymous (native allocations)": 70.0, "store files (Qdrant Edge)": 6.0}
        return {"rss_mb": rss, "memory": memory}

    minute = {"minute": 1, "chats": 6000, "memory_status": {"ok": 5990, "skipped:timeout": 10}, "errors": {}}
    results = {
        "seeded_exchanges": 1891,
        "machine_start": {"cpus": 2, "load_average": [1, 1, 1]},
        "before": shot(240.0, 80.0),
        "minutes": [minute | {"process": shot(252.0, 84.0)}],
    }
    text = read_soak.render(results)
    assert "| the pools filled | – | – | – | 240.0 | 80.0 | 70.0 | 6.0 |" in text
    assert "| 1 min | 6000 | 10 | 0 | 252.0 | 84.0 | 70.0 | 6.0 |" in text
    assert "RSS after 6000 chats ÷ before them: 1.05." in text
