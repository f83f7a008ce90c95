from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mnemo.errors import StoreError
from mnemo.extraction import Extractor
from mnemo.ingest import RAW_MODEL, MemoryWriter
from mnemo.llm import Completion
from mnemo.models import Memory, MemoryEvent, Scope
from mnemo.prompts import DECISION_TASK_MARKER, EXTRACTION_TASK_MARKER
from mnemo.queue import Exchange, ExchangeMessage
from mnemo.store.base import StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.keywords import context_line

# One store for the module (opening a shard costs ~0.2 s); every test writes under its own user.
pytestmark = pytest.mark.asyncio(loop_scope="module")

DIMENSION = 64
EARLIER = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


class BagOfWordsEmbedder:
    """Deterministic stand-in for MiniLM: hashed word counts, unit length."""

    model_id = "fake-bag-of-words"
    dimension = DIMENSION

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str], *, background: bool = False) -> list[list[float]]:
        self.calls.append(list(texts))
        return [self.vector(text) for text in texts]

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        return self.vector(text)

    def query_progress(self) -> float | None:
        return None

    async def probe(self, *, stored: bool = False) -> None:
        pass

    @staticmethod
    def vector(text: str) -> list[float]:
        counts = [0.0] * DIMENSION
        for word in text.lower().split():
            counts[zlib.crc32(word.encode()) % DIMENSION] += 1.0
        counts[0] += 0.01  # never the zero vector
        norm = math.sqrt(sum(c * c for c in counts))
        return [c / norm for c in counts]

    async def close(self) -> None:
        pass


Decide = Callable[[list[str], list[dict[str, Any]]], list[dict[str, Any]]]


class ScriptedLLM:
    """Answers extraction with fixed facts and decisions with a function of what it was shown."""

    model = "openai/scripted"

    def __init__(self, facts: list[str], decide: Decide | None = None) -> None:
        self.facts = facts
        self.decide = decide
        self.calls: list[str] = []

    async def complete(self, system: str, user: str) -> Completion:
        if system.startswith(EXTRACTION_TASK_MARKER):
            self.calls.append("extract")
            return Completion(json.dumps({"facts": self.facts}), 50, 5)
        assert system.startswith(DECISION_TASK_MARKER) and self.decide is not None
        self.calls.append("decide")
        shown = json.loads(user)
        facts = [fact["text"] for fact in shown["new_facts"]]
        return Completion(json.dumps({"decisions": self.decide(facts, shown["existing_memories"])}), 80, 8)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeMemoryStore]:
    path: Path = tmp_path_factory.mktemp("edge")
    edge = EdgeMemoryStore(path, "mnemo", StoreIdentity(BagOfWordsEmbedder.model_id, DIMENSION))
    await edge.open()
    yield edge
    await edge.close()


@pytest.fixture
def scope() -> Scope:
    return Scope(user_id=f"user-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def embedder() -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder()


def exchange(scope: Scope, *messages: tuple[str, str], request_id: str = "req_1", **extra: Any) -> Exchange:
    # Derived memory and event ids depend on the request id only (the gateway makes it a uuid4), so
    # tests sharing the module's store keep their request ids apart by prefixing the user id.
    return Exchange(
        request_id=f"{scope.user_id}:{request_id}",
        scope=scope,
        model="gpt-test",
        messages=[ExchangeMessage(role=role, content=content) for role, content in messages],
        reply="Noted.",
        started_at=NOW - timedelta(seconds=2),
        completed_at=NOW,
        **extra,
    )


def writer(store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, llm: ScriptedLLM | None = None) -> MemoryWriter:
    extractor = Extractor(llm) if llm is not None else None
    return MemoryWriter(store, embedder, extractor, default_mode="llm" if llm else "raw")


async def seed(store: EdgeMemoryStore, scope: Scope, *texts: str) -> list[Memory]:
    memories = [
        Memory(id=str(uuid.uuid4()), text=text, user_id=scope.user_id, created_at=EARLIER + timedelta(minutes=i))
        for i, text in enumerate(texts)
    ]
    await store.upsert(memories, [BagOfWordsEmbedder.vector(m.text) for m in memories])
    return memories


async def valid_texts(store: EdgeMemoryStore, scope: Scope) -> list[str]:
    return sorted(m.text for m in await store.list(scope))


async def everything(store: EdgeMemoryStore, scope: Scope) -> tuple[list[Memory], list[MemoryEvent]]:
    memories = await store.list(scope, include_invalidated=True, limit=1000)
    return sorted(memories, key=lambda m: m.id), await store.list_events(scope.user_id)


# --- raw mode ------------------------------------------------------------------------------


async def test_raw_mode_stores_each_new_user_message_after_the_last_assistant_message(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    ex = exchange(
        scope,
        ("system", "be nice"),
        ("user", "I used to live in Paris"),
        ("assistant", "Nice."),
        ("user", "  I live in Austin  "),
        ("user", "I like green tea"),
        metadata={"app": "chat"},
    )
    result = await writer(store, embedder).process(ex)
    assert (result.mode, result.facts, result.invalidated, result.usage.calls) == ("raw", 2, [], 0)
    assert await valid_texts(store, scope) == ["I like green tea", "I live in Austin"]
    stored = [await store.get(memory_id) for memory_id in result.created]
    assert all(m is not None and m.source_request_id == ex.request_id and m.version == 1 for m in stored)
    # The assistant message the turn answers is kept as reply_to, indexed with the memory.
    assert all(
        m is not None and m.created_at == NOW and m.metadata == {"app": "chat", "reply_to": "Nice."} for m in stored
    )
    events = await store.list_events(scope.user_id)
    assert sorted(e.new_text or "" for e in events) == ["I like green tea", "I live in Austin"]
    assert {(e.action, e.model, e.source_request_id, e.reason) for e in events} == {
        ("ADD", RAW_MODEL, ex.request_id, "new information")
    }


async def test_raw_mode_stores_statements_not_questions_or_small_talk_unless_told_to_store_all(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder
) -> None:
    said = [("user", "What is my dog called?"), ("user", "thanks!"), ("user", "My dog is called Pixel")]
    filtered, everything = Scope(user_id="raw-filter-on"), Scope(user_id="raw-filter-all")
    result = await writer(store, embedder).process(exchange(filtered, *said))
    assert (result.facts, len(result.created)) == (1, 1)
    assert await valid_texts(store, filtered) == ["My dog is called Pixel"]
    assert embedder.calls[-1] == [context_line("My dog is called Pixel", NOW, {})]  # nothing else embedded
    keep_all = MemoryWriter(store, embedder, None, "raw", raw_filter="all")
    await keep_all.process(exchange(everything, *said))
    assert await valid_texts(store, everything) == ["My dog is called Pixel", "What is my dog called?", "thanks!"]


async def test_raw_mode_stores_nothing_when_the_exchange_has_no_new_user_message(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    ex = exchange(scope, ("user", "hello"), ("assistant", "hi"), ("tool", "result"))
    result = await writer(store, embedder).process(ex)
    assert (result.facts, result.created) == (0, [])
    assert embedder.calls == []
    assert await store.list(scope) == []


async def test_raw_mode_skips_a_message_already_stored_verbatim_ignoring_case_and_spacing(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    await writer(store, embedder).process(exchange(scope, ("user", "I live in Austin"), request_id="req_a"))
    result = await writer(store, embedder).process(
        exchange(scope, ("user", "i live  in AUSTIN"), ("user", "I have a dog"), request_id="req_b")
    )
    assert len(result.created) == 1
    assert await valid_texts(store, scope) == ["I have a dog", "I live in Austin"]
    assert [e.new_text for e in await store.list_events(scope.user_id)].count("I have a dog") == 1


async def test_raw_mode_stores_a_message_repeated_within_one_turn_only_once(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    await writer(store, embedder).process(exchange(scope, ("user", "I live in Austin"), ("user", "I live in Austin")))
    assert await valid_texts(store, scope) == ["I live in Austin"]


async def test_raw_mode_is_used_when_llm_extraction_is_asked_for_but_not_configured(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    ex = exchange(scope, ("user", "I live in Austin"), extraction_mode="llm")
    result = await writer(store, embedder).process(ex)
    assert result.mode == "raw"
    assert await valid_texts(store, scope) == ["I live in Austin"]


async def test_the_per_request_raw_override_skips_the_configured_llm(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    llm = ScriptedLLM(["Lives in Austin"])
    result = await writer(store, embedder, llm).process(
        exchange(scope, ("user", "I live in Austin"), extraction_mode="raw")
    )
    assert (result.mode, llm.calls) == ("raw", [])
    assert await valid_texts(store, scope) == ["I live in Austin"]


async def test_running_the_same_raw_exchange_twice_writes_no_duplicates(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    ex = exchange(scope, ("user", "I live in Austin"), ("user", "I like tea"))
    first = await writer(store, embedder).process(ex)
    before = await everything(store, scope)
    second = await writer(store, embedder).process(ex)
    assert len(first.created) == 2 and second.created == []
    assert await everything(store, scope) == before


# --- llm mode ------------------------------------------------------------------------------


async def test_llm_mode_adds_facts_without_a_decision_call_when_nothing_similar_exists(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    llm = ScriptedLLM(["Lives in Austin", "Likes green tea"])
    ex = exchange(scope, ("user", "I live in Austin and like tea"))
    result = await writer(store, embedder, llm).process(ex)
    assert llm.calls == ["extract"]
    assert (result.mode, result.facts, result.usage.calls, len(result.created)) == ("llm", 2, 1, 2)
    assert await valid_texts(store, scope) == ["Likes green tea", "Lives in Austin"]
    events = await store.list_events(scope.user_id)
    assert {(e.action, e.model, e.source_request_id) for e in events} == {("ADD", "openai/scripted", ex.request_id)}


async def test_llm_mode_with_no_facts_writes_nothing(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    llm = ScriptedLLM([])
    result = await writer(store, embedder, llm).process(exchange(scope, ("user", "hello!")))
    assert (result.facts, result.created, result.usage.calls) == (0, [], 1)
    assert embedder.calls == []


def decide_by_text(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {memory["text"]: memory["id"] for memory in existing}
    plan = {
        "Lives in Berlin": ("UPDATE", "Lives in Austin", "moved to Berlin"),
        "Has no cat anymore": ("DELETE", "Has a cat", "the cat is gone"),
        "Likes green tea": ("NONE", "Likes green tea", "already known"),
        "Has a dog": ("ADD", None, "new pet"),
    }
    rows = []
    for index, fact in enumerate(facts):
        action, target, reason = plan[fact]
        if target is not None and target not in ids:  # what it refers to is gone: nothing to do
            action, target = "NONE", fact
        row = {"fact": index, "action": action, "id": ids.get(target) if target else None, "reason": reason}
        if action in ("ADD", "UPDATE"):
            row["text"] = fact
        rows.append(row)
    return rows


FACTS = ["Lives in Berlin", "Has no cat anymore", "Likes green tea", "Has a dog"]


async def test_llm_mode_applies_add_update_delete_and_none_with_versions_and_events(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    city, cat, tea = await seed(store, scope, "Lives in Austin", "Has a cat", "Likes green tea")
    llm = ScriptedLLM(FACTS, decide_by_text)
    ex = exchange(scope, ("user", "big news"))
    result = await writer(store, embedder, llm).process(ex)

    assert llm.calls == ["extract", "decide"]
    assert (result.usage.calls, result.usage.prompt_tokens, result.usage.completion_tokens) == (2, 130, 13)
    assert sorted(result.invalidated) == sorted([city.id, cat.id])
    assert await valid_texts(store, scope) == ["Has a dog", "Likes green tea", "Lives in Berlin"]

    created = {m.text: m for m in [await store.get(i) for i in result.created] if m is not None}
    berlin, dog = created["Lives in Berlin"], created["Has a dog"]
    assert (berlin.version, berlin.supersedes, berlin.source_request_id, berlin.created_at) == (
        2,
        city.id,
        ex.request_id,
        NOW,
    )
    assert (dog.version, dog.supersedes) == (1, None)

    old_city, old_cat, still_tea = await store.get(city.id), await store.get(cat.id), await store.get(tea.id)
    assert old_city is not None and (old_city.invalid_at, old_city.superseded_by) == (NOW, berlin.id)
    assert old_city.text == "Lives in Austin"  # never overwritten
    assert old_cat is not None and (old_cat.invalid_at, old_cat.superseded_by) == (NOW, None)
    assert still_tea is not None and still_tea.is_valid

    events = {e.action: e for e in await store.list_events(scope.user_id)}
    assert set(events) == {"ADD", "UPDATE", "DELETE"}
    update, delete, add = events["UPDATE"], events["DELETE"], events["ADD"]
    assert (update.memory_id, update.previous_memory_id) == (berlin.id, city.id)
    assert (update.old_text, update.new_text, update.reason) == (
        "Lives in Austin",
        "Lives in Berlin",
        "moved to Berlin",
    )
    assert (delete.memory_id, delete.previous_memory_id, delete.old_text) == (cat.id, None, "Has a cat")
    assert delete.reason == "the cat is gone"
    assert (add.memory_id, add.new_text, add.old_text) == (dog.id, "Has a dog", None)
    for event in events.values():
        assert (event.source_request_id, event.model, event.actor, event.created_at) == (
            ex.request_id,
            "openai/scripted",
            "worker",
            NOW,
        )


async def test_running_the_same_llm_exchange_twice_writes_no_duplicates(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    await seed(store, scope, "Lives in Austin", "Has a cat", "Likes green tea")
    ex = exchange(scope, ("user", "big news"))
    first = await writer(store, embedder, ScriptedLLM(FACTS, decide_by_text)).process(ex)
    before = await everything(store, scope)
    await writer(store, embedder, ScriptedLLM(FACTS, decide_by_text)).process(ex)
    after = await everything(store, scope)
    assert [m.id for m in after[0]] == [m.id for m in before[0]]
    assert [e.id for e in after[1]] == [e.id for e in before[1]]
    assert await valid_texts(store, scope) == ["Has a dog", "Likes green tea", "Lives in Berlin"]
    assert len(first.created) == 2


async def test_replaying_an_add_only_llm_exchange_reuses_the_same_ids(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    def always_add(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"fact": i, "action": "ADD", "id": None, "text": f, "reason": "new"} for i, f in enumerate(facts)]

    ex = exchange(scope, ("user", "I have a dog"))
    first = await writer(store, embedder, ScriptedLLM(["Has a dog"], always_add)).process(ex)
    second = await writer(store, embedder, ScriptedLLM(["Has a dog"], always_add)).process(ex)
    assert first.created == second.created
    assert await valid_texts(store, scope) == ["Has a dog"]
    assert len(await store.list_events(scope.user_id)) == 1


async def test_llm_update_text_that_differs_from_the_fact_is_embedded_before_storing(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    (city,) = await seed(store, scope, "Lives in Austin")

    def rewrite(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"fact": 0, "action": "UPDATE", "id": 0, "text": "Lives in Berlin since May", "reason": "moved"}]

    await writer(store, embedder, ScriptedLLM(["Lives in Berlin"], rewrite)).process(exchange(scope, ("user", "x")))
    # Facts are embedded with their context (when, and who said it when known), as they are indexed.
    dated = [context_line(text, NOW, {}) for text in ("Lives in Berlin", "Lives in Berlin since May")]
    assert embedder.calls == [dated[:1], dated[1:]]
    (hit,) = await store.search(scope, BagOfWordsEmbedder.vector(dated[1]), limit=1)
    assert (hit.memory.text, hit.memory.supersedes) == ("Lives in Berlin since May", city.id)
    assert hit.score == pytest.approx(1.0, abs=1e-4)


async def test_an_add_decision_that_mentions_an_existing_id_does_not_invalidate_that_memory(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    (city,) = await seed(store, scope, "Lives in Austin")

    def add_with_related_id(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"fact": 0, "action": "ADD", "id": 0, "text": "Has a dog", "reason": "new, unrelated to 0"}]

    result = await writer(store, embedder, ScriptedLLM(["Has a dog"], add_with_related_id)).process(
        exchange(scope, ("user", "I got a dog"))
    )
    assert result.invalidated == []
    assert await valid_texts(store, scope) == ["Has a dog", "Lives in Austin"]
    still = await store.get(city.id)
    assert still is not None and still.is_valid


async def test_replaying_an_update_whose_answer_now_names_the_new_version_keeps_the_fact_valid(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    await seed(store, scope, "Lives in Austin")

    def update_first(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"fact": 0, "action": "UPDATE", "id": 0, "text": "Lives in Berlin", "reason": "moved"}]

    ex = exchange(scope, ("user", "I moved to Berlin"))
    first = await writer(store, embedder, ScriptedLLM(["Lives in Berlin"], update_first)).process(ex)
    await writer(store, embedder, ScriptedLLM(["Lives in Berlin"], update_first)).process(ex)
    berlin = await store.get(first.created[0])
    assert berlin is not None
    assert (berlin.is_valid, berlin.version, berlin.superseded_by) == (True, 2, None)
    assert await valid_texts(store, scope) == ["Lives in Berlin"]


async def test_a_fact_the_user_restates_word_for_word_is_neither_embedded_nor_shown_to_the_llm(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope
) -> None:
    (tea,) = await seed(store, scope, "Likes green tea")
    shown: list[list[str]] = []

    def add_all(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        shown.append(facts)
        return [{"fact": i, "action": "ADD", "id": None, "text": f, "reason": "new"} for i, f in enumerate(facts)]

    llm = ScriptedLLM(["likes  green TEA", "Has a dog"], add_all)
    result = await writer(store, embedder, llm).process(exchange(scope, ("user", "I like green tea and got a dog")))
    assert (result.facts, result.restated, len(result.created)) == (2, 1, 1)
    assert embedder.calls == [[context_line("Has a dog", NOW, {})]]
    assert shown == [["Has a dog"]]
    assert await valid_texts(store, scope) == ["Has a dog", "Likes green tea"]
    assert [e.new_text for e in await store.list_events(scope.user_id)] == ["Has a dog"]

    # Nothing new at all: one extraction call, nothing embedded, nothing written.
    embedder.calls.clear()
    again = await writer(store, embedder, ScriptedLLM(["Likes green tea"])).process(
        exchange(scope, ("user", "I like green tea"), request_id="req_2")
    )
    assert (again.facts, again.restated, again.created, again.usage.calls, embedder.calls) == (1, 1, [], 1, [])
    still = await store.get(tea.id)
    assert still is not None and still.is_valid


async def test_a_replay_after_a_crash_between_writing_and_invalidating_finishes_the_update(
    store: EdgeMemoryStore, embedder: BagOfWordsEmbedder, scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    (city,) = await seed(store, scope, "Lives in Austin")

    def update_city(facts: list[str], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        austin = next(m["id"] for m in existing if m["text"] == "Lives in Austin")
        return [{"fact": 0, "action": "UPDATE", "id": austin, "text": "Lives in Berlin", "reason": "moved"}]

    async def crash(*args: Any) -> None:
        raise StoreError("killed before invalidating")

    ex = exchange(scope, ("user", "I moved to Berlin"))
    with monkeypatch.context() as patched:
        patched.setattr(store, "invalidate", crash)
        with pytest.raises(StoreError):
            await writer(store, embedder, ScriptedLLM(["Lives in Berlin"], update_city)).process(ex)
    assert await valid_texts(store, scope) == ["Lives in Austin", "Lives in Berlin"]  # half applied

    # The replayed job's own earlier write is not a "known fact": it decides again and heals.
    await writer(store, embedder, ScriptedLLM(["Lives in Berlin"], update_city)).process(ex)
    assert await valid_texts(store, scope) == ["Lives in Berlin"]
    old = await store.get(city.id)
    assert old is not None and not old.is_valid
