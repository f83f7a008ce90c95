"""The overhead bench's report on the production shape (``serve-on``: mnemo serve, a worker process
and Redis): its CPU and RSS process by process, the chats per second one gateway core serves, its
ratios to LiteLLM beside mnemo up's, and its goal rows."""

from __future__ import annotations

from typing import Any

from bench.overhead import report


def block(
    target: str, stream: bool, ttft: float, total: float, cpu: float, processes: dict[str, Any] | None = None
) -> dict[str, Any]:
    record = {
        "api": "chat",
        "target": target,
        "stream": stream,
        "concurrency": 1,
        "round": 0,
        "ttft": {"n": 100, "p50": ttft, "p99": ttft * 2, "mean": ttft},
        "total": {"n": 100, "p50": total, "p99": total * 2, "mean": total},
        "requests_per_s": 100.0,
        "errors": 0,
        "with_memories": 0,
        "cpu_ms_per_request": cpu,
        "rss_mb": 400.0,
        "fail_open": 0,
    }
    return record | ({"processes": processes} if processes else {})


SERVE_PROCESSES = {
    "redis": {"cpu_ms_per_request": 0.5, "rss_mb": 12.0},
    "gateway": {"cpu_ms_per_request": 4.0, "rss_mb": 300.0},
    "worker": {"cpu_ms_per_request": 5.0, "rss_mb": 250.0},
}


def streamed_run() -> dict[str, Any]:
    records = [
        block("direct", True, ttft=1.0, total=2.0, cpu=0.2),
        block("mnemo-on", True, ttft=9.0, total=12.0, cpu=11.0),
        block("serve-on", True, ttft=6.0, total=8.0, cpu=9.5, processes=SERVE_PROCESSES),
        block("litellm", True, ttft=21.0, total=32.0, cpu=20.0),
    ]
    setup = {"rounds": 1, "concurrency": [1], "apis": ["chat"], "serve": "mnemo serve + worker + redis"}
    machine = {"time": "2026-12-07T00:00:00Z", "cpus": 2, "cpu_model": "test", "load_average": [0.0, 0.0, 0.0]}
    return report.build(records, setup, machine, machine)


def test_the_production_row_reads_each_process_and_the_chats_one_gateway_core_serves() -> None:
    (row,) = report.production_rows(streamed_run())

    assert row["cpu_ms_per_request"] == {
        "gateway": 4.0,
        "worker": 5.0,
        "redis": 0.5,
        "all": 9.5,
        "mnemo-on": 11.0,
        "litellm": 20.0,
    }
    assert row["chats_per_s_per_gateway_core"] == 250.0  # 1000 / 4 ms
    assert row["rss_mb"] == {"gateway": 300.0, "worker": 250.0, "redis": 12.0}
    assert row["added_ms"]["ttft_p50"] == 5.0 and row["added_ms"]["ttft_p99"] == 10.0
    assert row["ttft_p50_over_litellm"] == {"serve-on": 0.25, "mnemo-on": 0.4}  # 5 / 20 and 8 / 20


def test_the_goals_hold_the_production_shape_to_the_same_ratios_and_its_gateway_alone_to_the_cpu_goal() -> None:
    checks = {(c["target"], c["goal"]): c for c in streamed_run()["goals"]}

    ttft = checks[("serve-on", "serve-on added TTFT p50 <= 0.5 x litellm added")]
    assert (ttft["ratio"], ttft["met"]) == (0.25, True)
    whole = checks[("serve-on", "serve-on CPU ms per chat <= 0.3 x litellm's")]
    assert (whole["ratio"], whole["met"]) == (0.475, False)  # 9.5 / 20
    gateway = checks[("serve-on", "serve-on gateway alone: CPU ms per chat <= 0.3 x litellm's")]
    assert (gateway["ratio"], gateway["met"]) == (0.2, True)  # 4 / 20
    assert ("mnemo-on", "mnemo-on gateway alone: CPU ms per chat <= 0.3 x litellm's") not in checks


def test_the_page_shows_the_production_shape_table_and_its_goal_rows() -> None:
    page = report.markdown(streamed_run())

    section = page.split("## Production shape: mnemo serve + worker + Redis", 1)[1].split("## Goals", 1)[0]
    assert "| yes | 1 | +5.00 / +10.00 | +6.00 / +12.00 | 0.25 / 0.40 | 4.00 / 5.00 / 0.50 | " in section
    assert "| 9.50 / 11.00 / 20.00 | 250 | 300 / 250 / 12 | 0 | 0 |" in section
    assert "| serve-on gateway alone: CPU ms per chat <= 0.3 x litellm's | 0.20 yes |" in page


def test_a_run_without_the_production_shape_has_no_such_section() -> None:
    result = streamed_run()
    result["summary"] = [row for row in result["summary"] if row["target"] != "serve-on"]
    result["goals"] = report.goals(result["summary"])

    page = report.markdown(result)

    assert "Production shape" not in page
    assert "| mnemo-on CPU ms per chat <= 0.3 x litellm's | 0.55 **no** |" in page
