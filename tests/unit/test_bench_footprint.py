"""bench/footprint: how /proc/<pid>/smaps mappings are grouped, and the report's table."""

from __future__ import annotations

from pathlib import Path

from bench.footprint import run

DATA, CACHE = Path("/srv/data"), Path("/home/u/.cache/mnemo")


def test_mappings_are_grouped_by_what_holds_them() -> None:
    assert run.classify("[heap]", DATA, CACHE) == "Python heap (brk)"
    assert run.classify("", DATA, CACHE).startswith("anonymous")
    assert run.classify(str(CACHE / "minilm-fused-x/word_embeddings_q.bin"), DATA, CACHE).startswith("model files")
    assert run.classify(str(DATA / "qdrant-edge/segments/page_0.dat"), DATA, CACHE).startswith("store files")
    so = "/v/lib/python3.11/site-packages/onnxruntime/capi/onnxruntime_pybind11_state.so"
    assert run.classify(so, DATA, CACHE) == "library: onnxruntime"
    assert run.classify("/usr/lib/x86_64-linux-gnu/libc.so.6", DATA, CACHE) == "library: system"


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
            "up-first-start": [target(3.0, 200)] * 3,
            "serve": [target(1.5, 180)] * 3,
            "litellm": [target(8.0, 330), target(6.0, 340), target(7.0, 335)],
        },
    }
    text = run.report(result)
    assert "| `mnemo up` (model graphs built) | 2.0 | 0.286 | 200.0 | none |" in text
    assert "| LiteLLM proxy 1.108.7 | 7.0 | 1.0 | 335.0 | none |" in text
    assert "| Python heap (brk) | 60.0 |" in text and "| other |" not in text  # under 1 MB left out
