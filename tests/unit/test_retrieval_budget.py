"""Retrieval's budget (mnemo.retrieval.Retriever.retrieve): a busy query embedder that keeps
finishing forward passes is waited for; a dependency that shows no progress for
``memory.retrieval_timeout_ms`` is skipped as ``timeout``; more load than the ceiling allows is
skipped as ``overloaded``, at once when the embedder can tell it will not make it in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mnemo.errors import EmbedderOverloaded
from mnemo.models import Memory, Scope, ScoredMemory
from mnemo.retrieval import OVERLOADED, STALLED, Budget, Retrieval, Retriever

SCOPE = Scope(user_id="ana")
STALL_S = 0.05
FOUND = ScoredMemory(
    memory=Memory(id="m1", text="I live in Lisbon", user_id="ana", created_at=datetime(2026, 1, 1, tzinfo=UTC)),
    score=0.9,
)


class QueuedEmbedder:
    """A query embedder with ``ahead`` queries before this one, finishing one every ``pass_s``;
    ``pass_s`` None: stuck, it never finishes one. ``refuse``: it can tell the wait is too long."""

    model_id = "fake"
    dimension = 1

    def __init__(self, ahead: int, pass_s: float | None, refuse: bool = False) -> None:
        self.ahead, self.pass_s, self.refuse = ahead, pass_s, refuse
        self.finished_at: float | None = None
        self.deadlines: list[float | None] = []

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        self.deadlines.append(deadline)
        if self.refuse:
            raise EmbedderOverloaded("scripted: the queue cannot clear by the deadline")
        if self.pass_s is None:
            await asyncio.Event().wait()
        for _ in range(self.ahead + 1):  # the queries ahead, then this one
            await asyncio.sleep(self.pass_s or 0.0)
            self.finished_at = time.monotonic()
        return [1.0]

    def query_progress(self) -> float | None:
        return self.finished_at


class Store:
    def __init__(self, stuck: bool = False) -> None:
        self.stuck, self.searches = stuck, 0

    async def search(self, scope: Scope, vector: Sequence[float], **_: Any) -> list[ScoredMemory]:
        self.searches += 1
        if self.stuck:
            await asyncio.Event().wait()
        return [FOUND]


def retrieve(embedder: QueuedEmbedder, store: Store, ceiling_s: float = 60) -> Retrieval:
    retriever = Retriever(embedder, store, without_speaker_names=False)  # type: ignore[arg-type]
    budget = Budget(stall_s=STALL_S, ceiling_s=ceiling_s)
    return asyncio.run(retriever.retrieve(SCOPE, "Where do I live?", limit=8, threshold=0.2, budget=budget))


def test_a_query_queued_behind_a_busy_embedder_is_waited_for_past_the_stall_budget() -> None:
    # 20 passes of half the stall budget each: ten budgets in all, every one with progress.
    found = retrieve(QueuedEmbedder(ahead=19, pass_s=STALL_S / 2), store := Store())
    assert (found.failure, found.memories, store.searches) == (None, [FOUND], 1)


def test_a_stuck_embedder_is_skipped_as_a_timeout() -> None:
    found = retrieve(QueuedEmbedder(ahead=0, pass_s=None), store := Store())
    assert (found.failure, found.memories, store.searches) == (STALLED, [], 0)


def test_a_stuck_store_search_is_skipped_as_a_timeout() -> None:
    found = retrieve(QueuedEmbedder(ahead=0, pass_s=0.0), store := Store(stuck=True))
    assert (found.failure, found.memories, store.searches) == (STALLED, [], 1)


def test_a_busy_embedder_that_cannot_answer_within_the_ceiling_is_skipped_as_overloaded() -> None:
    found = retrieve(QueuedEmbedder(ahead=1000, pass_s=STALL_S / 2), store := Store(), ceiling_s=STALL_S * 4)
    assert (found.failure, found.memories, store.searches) == (OVERLOADED, [], 0)


def test_an_embedder_that_refuses_at_once_is_skipped_as_overloaded_and_was_given_the_deadline() -> None:
    started = time.monotonic()
    embedder = QueuedEmbedder(ahead=0, pass_s=0.0, refuse=True)
    found = retrieve(embedder, store := Store(), ceiling_s=30)
    assert (found.failure, found.memories, store.searches) == (OVERLOADED, [], 0)
    (deadline,) = embedder.deadlines
    assert deadline is not None and started + 30 <= deadline <= time.monotonic() + 30
