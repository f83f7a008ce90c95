"""bench/footprint's report table (how /proc/<pid>/smaps mappings are grouped: test_bench_load_probe)."""

from __future__ import annotations

from bench.footprint import run


def test_the_report_gives_medians_and_ratios_to_litellm() -> None:
    def target(ready: float, rss: float, **extra: object) -> dict[str, object]:
        return {"ready_s": ready, "rss_mb": {"process": rss}, **extra}

    machine = {"time": "t", "cpus": 2, "load_average": [0, 0, 0]}
    where = {"Python heap (brk)": 60.0, "anonymous (native)": 40.0, "other": 0.2}
    result = {
        "machine_start": machine,
        "machine_end": machine,
        "rounds": 3,
        "targets": {
            "up": [target(1.0, 200, where=where), target(2.0, 210, where=where), target(9.0, 190, where=where)],
            "up-restart": [target(1.2, 230, where=where | {"store files (Qdrant Edge)": 3.0})] * 3,
            "up-first-start": [target(3.0, 200)] * 3,
            "serve": [target(1.5, 180)] * 3,
            "litellm": [target(8.0, 330), target(6.0, 340), target(7.0, 335)],
        },
    }
    text = run.report(result)
    assert "| `mnemo up` (model graphs built) | 2.0 | 0.286 | 200.0 | none |" in text
    assert "| LiteLLM proxy 1.108.7 | 7.0 | 1.0 | 335.0 | none |" in text
    assert "| Python heap (brk) | 60.0 | 60.0 |" in text and "| other |" not in text  # under 1 MB left out
    assert "| store files (Qdrant Edge) | 0.0 | 3.0 |" in text
    assert "restarted on a store of 10,000 memories | 1.2 | 0.171 | 230.0 | none |" in text
