"""What one exchange can write is bounded (mnemo.ingest with the ``limits`` settings): memories
per exchange in raw and llm mode, the length of a raw memory, and the user's memories per
minute (real Redis, db 15). The excess is skipped, counted in the worker metrics, never an error."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis_async

from mnemo.config import LimitSettings
from mnemo.extraction import EXCERPT_MESSAGE_CHARS, Extractor, render_excerpt
from mnemo.ingest import MemoryWriter
from mnemo.job_metrics import JOB_METRICS_KEY, read_totals
from mnemo.models import Scope
from mnemo.store.base import StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from tests.conftest import REDIS_URL
from tests.unit.test_ingest import DIMENSION, NOW, BagOfWordsEmbedder, ScriptedLLM, exchange, seed

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeMemoryStore]:
    path: Path = tmp_path_factory.mktemp("edge")
    store = EdgeMemoryStore(path, "mnemo", StoreIdentity(BagOfWordsEmbedder.model_id, DIMENSION))
    await store.open()
    yield store
    await store.close()


@pytest_asyncio.fixture(loop_scope="module")
async def client() -> AsyncIterator[redis_async.Redis]:
    connection = redis_async.Redis.from_url(REDIS_URL)
    yield connection
    await connection.aclose()


@pytest.fixture
def scope() -> Scope:
    return Scope(user_id=f"limits-{uuid.uuid4().hex[:12]}")


def limited(store: EdgeMemoryStore, llm: ScriptedLLM | None = None, **limits: Any) -> MemoryWriter:
    extractor = Extractor(llm) if llm is not None else None
    settings = LimitSettings(**limits)
    return MemoryWriter(store, BagOfWordsEmbedder(), extractor, "llm" if llm else "raw", limits=settings)


async def texts(store: EdgeMemoryStore, scope: Scope) -> list[str]:
    return sorted(m.text for m in await store.list(scope, limit=5000))


async def test_a_raw_turn_of_two_thousand_user_messages_stores_only_the_newest_ones(
    edge: EdgeMemoryStore, scope: Scope
) -> None:
    turn = [("user", f"I noted thing number {n}") for n in range(2000)]
    writer = limited(edge)  # the defaults: 20 per exchange

    result = await writer.process(exchange(scope, ("assistant", "Tell me everything."), *turn))

    assert len(result.created) == 20 and result.skipped == {"per_exchange": 1980}
    assert await texts(edge, scope) == sorted(f"I noted thing number {n}" for n in range(1980, 2000))
    embedder = writer.embedder
    assert isinstance(embedder, BagOfWordsEmbedder) and [len(call) for call in embedder.calls] == [20]


async def test_a_raw_message_longer_than_the_limit_is_stored_cut_to_it(edge: EdgeMemoryStore, scope: Scope) -> None:
    huge = "I paste " + "word " * 200_000  # ~1 MB in one message

    result = await limited(edge, max_memory_chars=4000).process(exchange(scope, ("user", huge), ("user", "short")))

    assert result.truncated == 1 and result.skipped == {}
    stored = await texts(edge, scope)
    assert sorted(len(text) for text in stored) == [5, 4000]
    assert max(stored, key=len) == huge[:4000]


async def test_an_extraction_answer_with_too_many_facts_keeps_only_the_first_ones(
    edge: EdgeMemoryStore, scope: Scope
) -> None:
    llm = ScriptedLLM([f"Fact number {n}" for n in range(50)])

    result = await limited(edge, llm, max_facts_per_exchange=7).process(exchange(scope, ("user", "lots of facts")))

    assert result.skipped == {"per_exchange": 43} and len(result.created) == 7
    assert await texts(edge, scope) == sorted(f"Fact number {n}" for n in range(7))


async def test_a_decision_answer_adding_a_flood_of_memories_writes_at_most_the_cap(
    edge: EdgeMemoryStore, scope: Scope
) -> None:
    await seed(edge, scope, "I have a cat")

    def flood(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"fact": 0, "action": "ADD", "text": f"I have cat number {n}", "reason": "x"} for n in range(100)]

    llm = ScriptedLLM(["I have two cats"], flood)
    result = await limited(edge, llm, max_memories_per_exchange=5).process(exchange(scope, ("user", "two cats")))

    assert llm.calls == ["extract", "decide"]
    assert result.skipped == {"per_exchange": 95} and len(result.created) == 5
    assert len(await texts(edge, scope)) == 1 + 5


async def test_the_extraction_prompt_shows_each_message_at_most_so_long() -> None:
    scope = Scope(user_id="u")
    prompt = render_excerpt(exchange(scope, ("user", "x" * 1_000_000)).model_copy(update={"reply": "y" * 500_000}))

    assert len(prompt) < 3 * EXCERPT_MESSAGE_CHARS
    assert json.dumps("x" * EXCERPT_MESSAGE_CHARS) in prompt and json.dumps("y" * EXCERPT_MESSAGE_CHARS) in prompt


async def test_a_user_over_the_per_minute_quota_gets_the_excess_skipped_and_counted(
    edge: EdgeMemoryStore, scope: Scope, client: redis_async.Redis
) -> None:
    queue = f"mnemo:test:{uuid.uuid4().hex}"
    settings = LimitSettings(memories_per_user_per_minute=5)

    def writer() -> MemoryWriter:
        return MemoryWriter(edge, BagOfWordsEmbedder(), None, "raw", limits=settings, redis=client, queue_name=queue)

    def turn(request_id: str, *texts: str, late: bool = False) -> Any:
        ex = exchange(scope, *(("user", text) for text in texts), request_id=request_id)
        return ex.model_copy(update={"completed_at": NOW + timedelta(minutes=1)}) if late else ex

    try:
        first = await writer().process(turn("a", "one", "two", "three"))
        second = await writer().process(turn("b", "four", "five", "six", "seven"))
        # The window is the minute the exchange completed, not the minute the worker runs it.
        third = await writer().process(turn("c", "eight", "nine", late=True))
        totals = await read_totals(client, queue)
    finally:
        await client.delete(JOB_METRICS_KEY.format(queue_name=queue))

    assert (len(first.created), len(second.created), len(third.created)) == (3, 2, 2)
    assert second.skipped == {"rate_limited": 2}
    assert await texts(edge, scope) == sorted(["one", "two", "three", "six", "seven", "eight", "nine"])
    assert totals.counters == {"memories_skipped:rate_limited": 2}
