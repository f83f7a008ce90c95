"""The worker's writer stores each new memory's line count (``Memory.line_tokens``), in raw mode
and for the ADDs and UPDATEs of llm mode, on the embedded store and on qdrant-client's local mode;
memories it did not write (stored before counts were) keep none."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mnemo.config import StoreSettings
from mnemo.memory_line import count_line_tokens
from mnemo.models import Memory, Scope
from mnemo.store.base import MemoryStore, StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.server import QdrantServerMemoryStore
from tests.unit.test_ingest import FACTS, BagOfWordsEmbedder, ScriptedLLM, decide_by_text, exchange, seed, writer

IDENTITY = StoreIdentity(BagOfWordsEmbedder.model_id, BagOfWordsEmbedder.dimension)


@pytest.fixture(params=["edge", "local"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    if request.param == "edge":
        opened: MemoryStore = EdgeMemoryStore(tmp_path / "edge", "mnemo", IDENTITY)
    else:
        settings = StoreSettings(kind="qdrant", path=str(tmp_path / "local"), collection="mnemo")
        opened = QdrantServerMemoryStore(settings, IDENTITY)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def scope() -> Scope:
    return Scope(user_id=f"user-{uuid.uuid4().hex[:12]}")


async def by_text(store: MemoryStore, scope: Scope) -> dict[str, Memory]:
    return {m.text: m for m in await store.list(scope, include_invalidated=True, limit=100)}


async def test_raw_mode_stores_each_memorys_line_count(store: MemoryStore, scope: Scope) -> None:
    texts = ["I live in Lisbon", "My sister's name is <Ana> & she is 7 \u2028 years older"]
    await writer(store, BagOfWordsEmbedder()).process(exchange(scope, *[("user", text) for text in texts]))  # type: ignore[arg-type]

    stored = await by_text(store, scope)
    assert {text: stored[text].line_tokens for text in texts} == {text: count_line_tokens(text) for text in texts}


async def test_llm_mode_stores_the_count_of_what_it_adds_and_of_the_new_version_it_updates_to(
    store: MemoryStore, scope: Scope
) -> None:
    await seed(store, scope, "Lives in Austin", "Has a cat", "Likes green tea")  # type: ignore[arg-type]
    llm = ScriptedLLM(FACTS, decide_by_text)
    await writer(store, BagOfWordsEmbedder(), llm).process(exchange(scope, ("user", "big news")))  # type: ignore[arg-type]

    stored = await by_text(store, scope)
    assert stored["Lives in Berlin"].supersedes == stored["Lives in Austin"].id
    assert {text: stored[text].line_tokens for text in stored} == {
        "Lives in Berlin": count_line_tokens("Lives in Berlin"),  # UPDATE: the new text's count
        "Has a dog": count_line_tokens("Has a dog"),  # ADD
        "Lives in Austin": None,  # seeded as memories stored before counts were
        "Has a cat": None,
        "Likes green tea": None,
    }
