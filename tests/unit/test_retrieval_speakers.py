"""The second search without speaker names (mnemo.retrieval.Retriever, mnemo.speakers): a query
naming a speaker of the memories found is searched by meaning again with the names replaced,
while keywords and the speaker boost still read it as asked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from mnemo.embedding import Embedder
from mnemo.models import Memory, Scope, ScoredMemory
from mnemo.retrieval import Budget, Retriever
from mnemo.store import MemoryStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SCOPE = Scope(user_id="conv")


def said(memory_id: str, speaker: str | None) -> ScoredMemory:
    metadata = {"speaker": speaker} if speaker else {}
    memory = Memory(id=memory_id, text=memory_id, user_id="conv", created_at=NOW, metadata=metadata)
    return ScoredMemory(memory=memory, score=0.5)


class RecordingEmbedder:
    """Embeds a text as its length, remembering what it was asked."""

    model_id = "fake"
    dimension = 1

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        self.texts.append(text)
        return [float(len(text))]

    def query_progress(self) -> float | None:
        return None


class RecordingStore:
    """Answers each search with the next page of ``pages``, remembering the calls."""

    def __init__(self, *pages: list[ScoredMemory]) -> None:
        self.pages = list(pages)
        self.calls: list[tuple[Sequence[float], str | None, int]] = []

    async def search(
        self, scope: Scope, vector: Sequence[float], *, limit: int, query_text: str | None = None, **_: Any
    ) -> list[ScoredMemory]:
        self.calls.append((vector, query_text, limit))
        return self.pages.pop(0)


FIRST = [said("nate-1", "Nate"), said("joanna-1", "Joanna")]
SECOND = [said("nate-2", "Nate")]


def retriever(store: RecordingStore, embedder: RecordingEmbedder, **options: bool) -> Retriever:
    return Retriever(cast(Embedder, embedder), cast(MemoryStore, store), **options)


async def test_a_query_naming_a_speaker_found_is_searched_again_by_meaning_without_the_name() -> None:
    embedder, store = RecordingEmbedder(), RecordingStore(FIRST, SECOND)
    found = await retriever(store, embedder).search(SCOPE, "What pets does Nate have?", limit=8, threshold=0.2)
    assert found == SECOND
    assert embedder.texts == ["What pets does Nate have?", "What pets does someone have?"]
    # The second search's vector is the content query's; its keywords and boost read the query as asked.
    assert store.calls[1] == ([float(len("What pets does someone have?"))], "What pets does Nate have?", 8)


@pytest.mark.parametrize(
    ("query", "options"),
    [
        ("What pets do I have?", {}),  # names nobody
        ("What pets does Maria have?", {}),  # names someone who is not a speaker of the memories found
        ("What pets does Nate have?", {"without_speaker_names": False}),  # memory.search_without_speaker_names
    ],
)
async def test_one_search_when_the_query_names_no_speaker_found_or_the_setting_is_off(
    query: str, options: dict[str, bool]
) -> None:
    embedder, store = RecordingEmbedder(), RecordingStore(FIRST, SECOND)
    found = await retriever(store, embedder, **options).search(SCOPE, query, limit=8, threshold=0.2)
    assert found == FIRST
    assert embedder.texts == [query] and len(store.calls) == 1


async def test_the_budgeted_retrieval_searches_without_the_names_as_well() -> None:
    embedder, store = RecordingEmbedder(), RecordingStore(FIRST, SECOND)
    budget = Budget(stall_s=5.0, ceiling_s=5.0)
    result = await retriever(store, embedder).retrieve(
        SCOPE, "What did Nate recommend to Joanna?", limit=8, threshold=0.2, budget=budget
    )
    assert result.failure is None and result.memories == SECOND
    assert embedder.texts == ["What did Nate recommend to Joanna?", "What did someone recommend to someone?"]
    assert [call[1] for call in store.calls] == ["What did Nate recommend to Joanna?"] * 2


async def test_a_failing_second_search_returns_no_memories_rather_than_the_first_ones() -> None:
    class Failing(RecordingStore):
        async def search(self, scope: Scope, vector: Sequence[float], **kwargs: Any) -> list[ScoredMemory]:
            if self.calls:
                raise RuntimeError("store down")
            return await super().search(scope, vector, **kwargs)

    embedder, store = RecordingEmbedder(), Failing(FIRST)
    budget = Budget(stall_s=5.0, ceiling_s=5.0)
    result = await retriever(store, embedder).retrieve(
        SCOPE, "What pets does Nate have?", limit=8, threshold=0.2, budget=budget
    )
    assert result.failure == "RuntimeError" and result.memories == []
