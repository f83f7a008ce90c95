"""The embedded store's dense cache (mnemo.store.dense_cache) against a real Qdrant Edge: a search
through the cache finds what a scan of the user's memories finds, after every kind of write, and
with writes made while the user's vectors load."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnemo.config import Settings
from mnemo.models import Memory, Scope
from mnemo.runtime import build_store
from mnemo.store import edge as edge_module
from mnemo.store.base import StoreIdentity
from mnemo.store.dense_cache import DenseCache
from mnemo.store.edge import EdgeMemoryStore

DIM = 8
IDENTITY = StoreIdentity(embedder_model="test-embedder", dimension=DIM)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


CONSONANTS = "bcdfghjklmnpqrtvwz"  # no vowel, y or s: the stemmer leaves these words alone


def word(n: int) -> str:
    """A keyword no other memory holds, even stemmed: Edge breaks ties between equal keyword scores
    in no fixed order (two scans of the same data disagree), and fused ranks would differ with them."""
    letters = ""
    while True:
        n, digit = divmod(n, len(CONSONANTS))
        letters += CONSONANTS[digit]
        if n == 0:
            return f"zq{letters}x"


def unit(rng: np.random.Generator) -> list[float]:
    vector = rng.standard_normal(DIM)
    return (vector / np.linalg.norm(vector)).tolist()


def memory(n: int, rng: random.Random, user: str = "u1") -> Memory:
    agent = rng.choice([None, None, "a1", "a2"])
    text = f"note about {word(n if user == 'u1' else 1000 + n)}"
    return Memory(id=str(uuid.uuid4()), text=text, user_id=user, agent_id=agent, created_at=T0 + timedelta(seconds=n))


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[EdgeMemoryStore, EdgeMemoryStore]]:
    """The same writes go to both: one store scans, the other keeps every user's vectors."""
    scanned = EdgeMemoryStore(tmp_path / "scan", "mnemo", IDENTITY)
    cached = EdgeMemoryStore(
        tmp_path / "cached", "mnemo", IDENTITY, dense_cache=DenseCache(DIM, min_memories=1, max_bytes=2**30)
    )
    for store in (scanned, cached):
        await store.open()
    yield scanned, cached
    for store in (scanned, cached):
        await store.close()


async def both(stores: tuple[EdgeMemoryStore, EdgeMemoryStore], method: str, *args: object) -> None:
    for store in stores:
        await getattr(store, method)(*args)


async def load(store: EdgeMemoryStore, user_id: str, rng: np.random.Generator) -> None:
    await store.search(Scope(user_id=user_id), unit(rng), limit=1)
    await store.wait_for_vector_loads()
    assert store._dense is not None and store._dense.searched(user_id) is not None


async def assert_same_searches(
    scanned: EdgeMemoryStore, cached: EdgeMemoryStore, rng: np.random.Generator, queries: int = 40
) -> None:
    """Dense and hybrid searches give the same memories, in the same order, with the same scores."""
    picker = random.Random(7)
    for _ in range(queries):
        scope = Scope(user_id="u1", agent_id=picker.choice([None, "a1", "a2"]))
        options = {
            "limit": picker.choice([1, 3, 10]),
            "include_invalidated": picker.random() < 0.3,
            "score_threshold": picker.choice([None, 0.2]),
        }
        vector = unit(rng)
        dense = [await store.search(scope, vector, **options) for store in (scanned, cached)]
        assert [(hit.memory.id, hit.score) for hit in dense[0]] == [(hit.memory.id, hit.score) for hit in dense[1]]
        text = word(picker.randrange(220))  # at most one memory holds it
        hybrid = [await store.search(scope, vector, query_text=text, **options) for store in (scanned, cached)]
        assert [(hit.memory.id, hit.score) for hit in hybrid[0]] == [(hit.memory.id, hit.score) for hit in hybrid[1]]


async def test_a_search_through_the_cache_finds_what_a_scan_finds_after_every_kind_of_write(
    stores: tuple[EdgeMemoryStore, EdgeMemoryStore],
) -> None:
    scanned, cached = stores
    rng, picker = np.random.default_rng(1), random.Random(1)
    first = [memory(n, picker) for n in range(150)]
    await both(stores, "upsert", first, [unit(rng) for _ in first])
    others = [memory(n, picker, user="u2") for n in range(20)]
    await both(stores, "upsert", others, [unit(rng) for _ in others])
    await load(cached, "u1", rng)
    await assert_same_searches(scanned, cached, rng)

    # Writes after the load reach the cache: invalidations, hard deletes, new memories, a restatement.
    for gone in picker.sample(first, 40):
        await both(stores, "invalidate", gone.id, T0 + timedelta(days=1), None)
    await both(stores, "delete_memories", [m.id for m in picker.sample(first, 30)])
    later = [memory(n, picker) for n in range(150, 200)]
    await both(stores, "upsert", later, [unit(rng) for _ in later])
    moved = later[0].model_copy(update={"agent_id": "a2"})
    await both(stores, "upsert", [moved], [unit(rng)])
    await both(stores, "delete_user", "u2")
    await assert_same_searches(scanned, cached, rng)


async def test_the_cache_picks_the_nearest_memories_the_scope_may_see(
    stores: tuple[EdgeMemoryStore, EdgeMemoryStore],
) -> None:
    """With more memories than a search scores, the nearest ones being invalidated or another agent's
    must not crowd out what the scope may see."""
    _, cached = stores
    target = [1.0] + [0.0] * (DIM - 1)
    near = [Memory(id=str(uuid.uuid4()), text=f"near {n}", user_id="u1", created_at=T0) for n in range(5)]
    theirs = [m.model_copy(update={"id": str(uuid.uuid4()), "agent_id": "a2"}) for m in near]
    far = [Memory(id=str(uuid.uuid4()), text=f"far {n}", user_id="u1", agent_id="a1", created_at=T0) for n in range(30)]
    await cached.upsert(near + theirs, [target] * 10)
    await cached.upsert(far, [[3.0, 4.0] + [0.0] * (DIM - 2)] * 30)  # not unit length: Edge normalises it
    await load(cached, "u1", np.random.default_rng(2))
    for hidden in near:
        await cached.invalidate(hidden.id, T0 + timedelta(days=1), None)
    found = await cached.search(Scope(user_id="u1", agent_id="a1"), target, limit=3)
    assert len(found) == 3 and all(hit.memory.text.startswith("far") for hit in found)
    everything = await cached.search(Scope(user_id="u1"), target, limit=10, include_invalidated=True)
    assert {hit.memory.id for hit in everything} == {m.id for m in near + theirs}

    # Vectors written after the load count by cosine, as Edge's do, whatever their length.
    long_but_wide = Memory(id=str(uuid.uuid4()), text="wide", user_id="u1", agent_id="a1", created_at=T0)
    short_but_close = Memory(id=str(uuid.uuid4()), text="close", user_id="u1", agent_id="a1", created_at=T0)
    await cached.upsert(
        [long_but_wide, short_but_close], [[10.0, 10.0] + [0.0] * (DIM - 2), [0.9, 0.1] + [0.0] * (DIM - 2)]
    )
    best = await cached.search(Scope(user_id="u1", agent_id="a1"), target, limit=1)
    assert [hit.memory.text for hit in best] == ["close"]


async def test_writes_made_while_a_users_vectors_load_reach_the_cache(
    stores: tuple[EdgeMemoryStore, EdgeMemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "VECTOR_PAGE", 4)  # many pages, each with writes between them
    scanned, cached = stores
    rng, picker = np.random.default_rng(3), random.Random(3)
    held = [memory(n, picker) for n in range(80)]
    await both(stores, "upsert", held, [unit(rng) for _ in held])
    await cached.search(Scope(user_id="u1"), unit(rng), limit=1)  # starts the load
    n, writes = 80, 0
    while cached._loading:
        writes += 1
        action = picker.choice(["add", "invalidate", "delete"])
        if action == "add":
            new = memory(n, picker)
            n += 1
            held.append(new)
            await both(stores, "upsert", [new], [unit(rng)])
        elif action == "invalidate":
            await both(stores, "invalidate", picker.choice(held).id, T0 + timedelta(days=1), None)
        else:
            await both(stores, "delete_memories", [held.pop(picker.randrange(len(held))).id])
        await asyncio.sleep(0)
    assert writes >= 10, "the load finished before the writes it should have raced with"
    assert cached._dense is not None and cached._dense.searched("u1") is not None
    await assert_same_searches(scanned, cached, rng)


async def test_erasing_a_user_while_their_vectors_load_leaves_nothing_of_them_cached(
    stores: tuple[EdgeMemoryStore, EdgeMemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_module, "VECTOR_PAGE", 4)
    _, cached = stores
    rng, picker = np.random.default_rng(4), random.Random(4)
    held = [memory(n, picker) for n in range(40)]
    await cached.upsert(held, [unit(rng) for _ in held])
    await cached.search(Scope(user_id="u1"), unit(rng), limit=1)
    await asyncio.sleep(0)
    assert cached._loading
    await cached.delete_user("u1")
    await cached.wait_for_vector_loads()
    assert cached._dense is not None and "u1" not in cached._dense
    assert await cached.search(Scope(user_id="u1"), unit(rng), limit=5) == []

    # The user comes back: their new memories load and are found through the cache.
    again = [memory(n, picker) for n in range(5)]
    await cached.upsert(again, [unit(rng) for _ in again])
    await load(cached, "u1", rng)
    found = await cached.search(Scope(user_id="u1"), unit(rng), limit=10, include_invalidated=True)
    assert {hit.memory.id for hit in found} == {m.id for m in again}


async def test_a_user_holding_fewer_than_min_memories_is_searched_by_scanning(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY, dense_cache=DenseCache(DIM, min_memories=20, max_bytes=2**30))
    await store.open()
    try:
        rng, picker = np.random.default_rng(5), random.Random(5)
        held = [memory(n, picker) for n in range(19)]
        await store.upsert(held, [unit(rng) for _ in held])
        assert len(await store.search(Scope(user_id="u1"), unit(rng), limit=30, include_invalidated=True)) == 19
        await store.wait_for_vector_loads()
        assert store._dense is not None and "u1" not in store._dense
        one_more = memory(19, picker)
        await store.upsert([one_more], [unit(rng)])
        await store.search(Scope(user_id="u1"), unit(rng), limit=1)
        await store.wait_for_vector_loads()
        assert store._dense.searched("u1") is not None
    finally:
        await store.close()


def test_the_embedded_store_gets_its_cache_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), store={"vector_cache_min_memories": 500, "vector_cache_mb": 64})
    store = build_store(settings, IDENTITY)
    assert isinstance(store, EdgeMemoryStore) and store._dense is not None
    assert (store._dense.min_memories, store._dense.max_bytes) == (500, 64 * 2**20)
    for off in ({"vector_cache_min_memories": 0}, {"vector_cache_mb": 0}):
        store = build_store(Settings(data_dir=str(tmp_path), store=off), IDENTITY)
        assert isinstance(store, EdgeMemoryStore) and store._dense is None
        assert store.vector_cache_usage() is None
