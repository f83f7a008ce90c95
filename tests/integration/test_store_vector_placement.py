"""The embedded store's vectors are read from their files as searches need them (Qdrant Edge's
Cold placement), and a store written with the default placement, which reads a shard's whole
vector file into memory at every load, is rebuilt once when it is opened."""

from __future__ import annotations

from pathlib import Path

import qdrant_edge as qe

from mnemo.models import Scope
from mnemo.store import edge_compaction as compaction
from mnemo.store import payload as pl
from mnemo.store.edge import EdgeMemoryStore
from tests.integration.test_store_contract import IDENTITY, event, memory, put, vec


def shard_directories(root: Path) -> list[Path]:
    current = compaction.current_directories(root / "mnemo")
    return [root / "mnemo" / current.get(name, name) for name in ("memories", "events")]


async def test_a_new_store_reads_its_vectors_from_disk(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    await put(store, memory("a fact"))
    await store.close()
    assert [compaction.holds_vectors_in_memory(path) for path in shard_directories(tmp_path)] == [False, False]


async def test_a_store_that_held_its_vectors_in_memory_is_rebuilt_with_everything_in_it(tmp_path: Path) -> None:
    old = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    # What stores written before Cold placement hold: Edge's default (vectors read in whole).
    old._vectors = {
        "memories": {pl.DENSE_VECTOR: qe.EdgeVectorParams(size=IDENTITY.dimension, distance=qe.Distance.Cosine)},
        "events": qe.EdgeVectorParams(1, qe.Distance.Dot),
    }
    await old.open()
    facts = [memory(f"fact number {n}", user=f"u{n % 3}") for n in range(40)]
    await put(old, *facts)
    await old.add_events([event(fact.id, user=fact.user_id) for fact in facts])
    await old.close()
    assert all(compaction.holds_vectors_in_memory(path) for path in shard_directories(tmp_path))

    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    try:
        await store.wait_for_erasures()  # the rebuild
        assert not any(compaction.holds_vectors_in_memory(path) for path in shard_directories(tmp_path))
        assert [await store.get(fact.id) for fact in facts] == facts
        assert len(await store.list_events("u1")) == len([f for f in facts if f.user_id == "u1"])
        hits = await store.search(Scope(user_id="u2"), vec(1.0), limit=50)
        assert {hit.memory.id for hit in hits} == {f.id for f in facts if f.user_id == "u2"}
        assert not (tmp_path / "mnemo" / compaction.PENDING_MARKER).exists()
    finally:
        await store.close()


def test_an_unreadable_segment_record_is_not_a_reason_to_rebuild(tmp_path: Path) -> None:
    record = tmp_path / "segments" / "s1" / "segment.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    assert compaction.holds_vectors_in_memory(tmp_path) is False
    record.write_text('{"config": {"vector_data": {"dense": {"storage_type": "InRamChunkedMmap"}}}}')
    assert compaction.holds_vectors_in_memory(tmp_path) is True
