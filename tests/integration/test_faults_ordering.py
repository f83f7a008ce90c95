"""Per-user ordering under real concurrency: three arq workers (four jobs each) in one loop
sharing one store, as several ``mnemo worker`` processes share a Qdrant server, and slow LLM
calls so jobs overlap. Each user's exchanges are applied in the order they completed, two
jobs of one user never both ADD the same fact, and different users still run in parallel."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from arq import Worker

from mnemo.config import Settings
from mnemo.ingest import IngestResult, MemoryWriter
from mnemo.models import Scope
from mnemo.queue import Exchange
from tests.conftest import wait_until
from tests.support.ledger import thread_tally
from tests.support.probes import chat_as, drain
from tests.support.servers import MnemoThread, stop_worker
from tests.support.upstream import ScriptedUpstream, clause_facts
from workers.settings import build_worker

# litellm imports a provider lazily on the first extraction call; pydantic warns about its
# TypedDicts, and under pytest warnings-as-errors that would fail the call.
pytestmark = pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning")

# Per-user sequence keys live in the shared test Redis: fresh user ids for every run.
RUN = uuid.uuid4().hex[:8]
USERS = [f"order-{RUN}-{n}" for n in range(4)]
TURNS = ["I live in Austin", "I have a dog named Rex", "I moved to Denver", "I have a dog named Rex"]
EXTRA_WORKERS = 2
BURST_USER = f"burst-{RUN}"


def moves_replace_homes(facts: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scripted decisions: a known fact is NONE, 'I moved to X' UPDATEs where the user lives."""
    decisions = []
    for fact in facts:
        same = next((m for m in existing if m["text"].lower() == fact["text"].lower()), None)
        home = next((m for m in existing if m["text"].startswith("I live in")), None)
        if same is not None:
            decisions.append({"fact": fact["index"], "action": "NONE", "id": same["id"], "reason": "known"})
        elif fact["text"].startswith("I moved to") and home is not None:
            decisions.append(
                {"fact": fact["index"], "action": "UPDATE", "id": home["id"], "text": fact["text"], "reason": "moved"}
            )
        else:
            decisions.append({"fact": fact["index"], "action": "ADD", "text": fact["text"], "reason": "new"})
    return decisions


class Spans:
    """When each job's memory work ran, per user: to find overlaps within and across users."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, process: Callable[[MemoryWriter, Exchange], Any]) -> Callable[[MemoryWriter, Exchange], Any]:
        async def timed(writer: MemoryWriter, exchange: Exchange) -> IngestResult:
            started = time.monotonic()
            try:
                result: IngestResult = await process(writer, exchange)
                return result
            finally:
                self.spans.append((exchange.scope.user_id, started, time.monotonic()))

        return timed

    def overlapping_pairs(self, same_user: bool) -> int:
        pairs = 0
        for i, (user_a, start_a, end_a) in enumerate(self.spans):
            for user_b, start_b, end_b in self.spans[i + 1 :]:
                if (user_a == user_b) == same_user and start_a < end_b and start_b < end_a:
                    pairs += 1
        return pairs


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Spans:
    recorder = Spans()
    monkeypatch.setattr(MemoryWriter, "process", recorder.wrap(MemoryWriter.process))
    return recorder


@pytest.fixture
def mnemo(make_settings: Callable[..., Settings]) -> Iterator[MnemoThread]:
    settings = make_settings(worker={"max_jobs": 4, "retry_base_delay_s": 1.0})
    running = MnemoThread(settings).start()
    assert running.worker is not None

    async def build() -> Worker:
        return build_worker(settings, running.redis, core=running.core)

    extra = [running.runner.call(build()) for _ in range(EXTRA_WORKERS)]
    for worker in extra:
        running.runner.submit(worker.async_run())
    yield running
    for worker in extra:
        running.runner.call(stop_worker(worker), 15)
    running.stop()


class FlakyExtraction:
    """Scripted extraction whose first answer for each user's first turn is a server error: that
    job is retried after a backoff, and the user's later jobs must not overtake it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self, text: str) -> list[str]:
        if text == TURNS[0] and self.failures > 0:
            self.failures -= 1
            raise RuntimeError("scripted extraction outage")  # the upstream answers 500
        return clause_facts(text)


def test_each_users_exchanges_apply_in_order_across_workers_while_users_run_in_parallel(
    mnemo: MnemoThread, upstream: ScriptedUpstream, spans: Spans
) -> None:
    upstream.decide = moves_replace_homes
    upstream.extract = FlakyExtraction(failures=len(USERS))
    upstream.json_delay_s = 0.15  # every LLM call is slow, so jobs of different users overlap
    upstream.json_hold_until_peak = 2  # and the first waits until another user's job calls too
    sent: dict[str, str] = {}
    for turn in TURNS:  # interleaved: user 0 turn 0, user 1 turn 0, ..., user 0 turn 1, ...
        for user in USERS:
            sent[chat_as(mnemo.url + "/v1", user, turn)] = user
    # Every exchange finishes: 16 jobs and 4 failed tries, each applied (duplicates decided NONE).
    wait_until(lambda: len(spans.spans) == len(sent) + len(USERS), timeout=60, interval=0.1)
    drain(mnemo)
    for user in USERS:
        memories = mnemo.call(lambda core, u=user: core.store.list(Scope(user_id=u), include_invalidated=True))
        valid = sorted(m.text for m in memories if m.invalid_at is None)
        assert valid == ["I have a dog named Rex", "I moved to Denver"], (user, valid)
        austin = next(m for m in memories if m.text == "I live in Austin")
        assert austin.invalid_at is not None and austin.superseded_by is not None
        events = mnemo.call(lambda core, u=user: core.store.list_events(u))
        assert [(e.action, e.new_text) for e in events] == [
            ("ADD", "I live in Austin"),
            ("ADD", "I have a dog named Rex"),
            ("UPDATE", "I moved to Denver"),
        ]
    tally = thread_tally(mnemo, sent)
    assert tally.duplicated == 0
    assert spans.overlapping_pairs(same_user=True) == 0
    assert spans.overlapping_pairs(same_user=False) > 0  # users really ran in parallel


def test_ordering_survives_when_the_jobs_of_one_user_arrive_together(
    mnemo: MnemoThread, upstream: ScriptedUpstream, spans: Spans
) -> None:
    """Three exchanges of one user enqueued within milliseconds, twelve free job slots: the
    workers pick all three up at once, and still apply them one at a time, in order."""
    upstream.decide = moves_replace_homes
    upstream.json_delay_s = 0.05
    for text in ["I live in Austin", "I moved to Denver", "I moved to Denver"]:
        chat_as(mnemo.url + "/v1", BURST_USER, text)
    wait_until(lambda: len(spans.spans) == 3, timeout=30, interval=0.1)
    drain(mnemo)
    events = mnemo.call(lambda core: core.store.list_events(BURST_USER))
    assert [(e.action, e.new_text) for e in events] == [("ADD", "I live in Austin"), ("UPDATE", "I moved to Denver")]
    assert spans.overlapping_pairs(same_user=True) == 0
