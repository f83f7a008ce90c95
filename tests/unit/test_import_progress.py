"""`mnemo import`'s progress line and its LLM cost estimate, computed without a server."""

from __future__ import annotations

import io

from mnemo.imports import estimate, import_request_id
from mnemo.job_metrics import JobTotals
from mnemo_cli.import_progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_counts_what_is_done_its_rate_and_eta() -> None:
    clock, screen = Clock(), Terminal()
    progress = Progress(1000, screen, clock)
    clock.now += 10
    record = {"queued": 400, "applied": 150, "failed": 2, "dropped": 0, "duplicates": 48, "refused": 0}
    assert progress.line(record) == (
        "[####....................]  20% 200/1000 · queued 400 · applied 150 · failed 2 · 20.0/s · ETA 40s"
    )
    progress.update(record)
    progress.close()
    assert screen.getvalue().startswith("\r[####") and screen.getvalue().endswith("\n")


def test_off_a_terminal_progress_is_a_line_now_and_then() -> None:
    clock, log = Clock(), io.StringIO()
    progress = Progress(10, log, clock)
    for step in range(30):
        clock.now += 1
        progress.update({"applied": min(10, step)})
    assert len(log.getvalue().splitlines()) == 3  # one every 10 s, not one per update


def test_the_estimate_uses_the_workers_measured_averages() -> None:
    totals = JobTotals(jobs={"applied": 50.0}, counters={"llm_calls": 75.0, "prompt_tokens": 60000.0})
    totals.counters |= {"completion_tokens": 3000.0, "memories_created": 100.0}
    found = estimate("llm", 200, 1_000_000, totals)
    assert (found.llm_calls, found.prompt_tokens, found.completion_tokens, found.embeddings) == (
        300,
        240000,
        12000,
        400,
    )
    assert "averages over 50 applied exchanges (1.50 LLM calls each)" in found.basis
    assert estimate("raw", 200, 1_000_000, totals).llm_calls == 0


def test_without_measured_jobs_the_estimate_reads_the_text() -> None:
    found = estimate("llm", 10, 40_000, JobTotals())
    assert found.llm_calls == 15 and found.prompt_tokens > 10_000 and "no measured" in found.basis


def test_import_request_ids_are_stable_and_scoped() -> None:
    first = import_request_id("ana", None, "c1", "m1")
    assert first == import_request_id("ana", None, "c1", "m1") and first.startswith("imp_")
    assert len({first, import_request_id("ben", None, "c1", "m1"), import_request_id("ana", "bot", "c1", "m1")}) == 3
