"""Erasure reaches the disk in the embedded store: Qdrant Edge only marks a deleted point, so the
store rebuilds its shards without the erased points (mnemo.store.edge_compaction)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mnemo.models import Memory, Scope
from mnemo.store import edge_compaction as compaction
from mnemo.store.edge import EdgeMemoryStore
from tests.integration.test_store_contract import IDENTITY, T0, event, memory, put, vec
from tests.support.files import files_holding


def secret(user: str, number: int) -> Memory:
    return memory(f"My passport number is ZQX-{user}-{number:04d}", user=user)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeMemoryStore]:
    opened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await opened.open()
    yield opened
    await opened.close()


async def remember(store: EdgeMemoryStore, user: str, count: int) -> list[Memory]:
    memories = [secret(user, n) for n in range(count)]
    await put(store, *memories)
    await store.add_events([event(m.id, user=user, new_text=m.text) for m in memories])
    return memories


async def test_erasing_a_user_removes_their_text_from_the_store_files(store: EdgeMemoryStore, tmp_path: Path) -> None:
    await remember(store, "gone", 5)
    kept = await remember(store, "stays", 5)
    assert files_holding(tmp_path, "ZQX-gone-")  # a deleted point would stay in the WAL and payload pages

    assert await store.delete_user("gone") == (5, 5)
    await store.wait_for_erasures()

    assert files_holding(tmp_path, "ZQX-gone-") == []
    assert files_holding(tmp_path, "ZQX-stays-")
    assert not (tmp_path / "mnemo" / compaction.PENDING_MARKER).exists()
    assert [await store.get(m.id) for m in kept] == kept
    assert len(await store.list_events("stays")) == 5
    hits = await store.search(Scope(user_id="stays"), vec(1.0), limit=10, query_text="passport ZQX-stays-0003")
    assert {hit.memory.id for hit in hits} == {m.id for m in kept}


async def test_a_hard_deleted_memory_and_its_events_leave_the_store_files(
    store: EdgeMemoryStore, tmp_path: Path
) -> None:
    first, second = await remember(store, "u1", 2)

    await store.delete_memories([first.id])
    await store.wait_for_erasures()

    assert files_holding(tmp_path, first.text) == []
    assert await store.get(second.id) == second
    assert [e.memory_id for e in await store.list_events("u1")] == [second.id]


async def test_writes_made_while_the_store_is_rebuilt_are_kept(store: EdgeMemoryStore) -> None:
    """Writes do not wait for a rebuild: they go to the old shard and are replayed on the copy."""
    # Enough points for the copy to take many steps, so the writes arrive while it runs.
    background = [memory(f"background fact {n}") for n in range(20 * compaction.COPY_PAGE)]
    await put(store, *background)
    await remember(store, "gone", 1)
    written = memory("written during the rebuild", user="u2")
    history = event(written.id, user="u2")

    await store.delete_user("gone")
    for _ in range(3):
        await asyncio.sleep(0)  # the rebuild is copying
    await asyncio.gather(put(store, written), store.add_events([history]))
    await store.invalidate(background[0].id, T0, None)
    await store.delete_memories([background[1].id])
    await store.wait_for_erasures()

    assert await store.get(written.id) == written
    assert await store.list_events("u2") == [history]
    assert (await store.get(background[0].id)).invalid_at == T0  # type: ignore[union-attr]
    assert await store.get(background[1].id) is None
    assert len(await store.list(Scope(user_id="u1"), include_invalidated=True, limit=5000)) == len(background) - 1


async def test_an_erasure_interrupted_by_a_close_reaches_the_disk_at_the_next_open(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    await remember(store, "gone", 3)
    await store.delete_user("gone")
    await store.close()  # before the rebuild ran
    assert (tmp_path / "mnemo" / compaction.PENDING_MARKER).exists()
    assert files_holding(tmp_path, "ZQX-gone-")

    reopened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await reopened.open()
    try:
        await reopened.wait_for_erasures()
        assert files_holding(tmp_path, "ZQX-gone-") == []
        assert not (tmp_path / "mnemo" / compaction.PENDING_MARKER).exists()
    finally:
        await reopened.close()


async def test_directories_a_crash_left_behind_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    kept = await remember(store, "stays", 2)
    await remember(store, "gone", 1)
    await store.delete_user("gone")
    await store.wait_for_erasures()
    await store.close()
    root = tmp_path / "mnemo"
    current = compaction.current_directories(root)
    assert set(current) == {"memories", "events"}
    # As a crash would leave them: a copy cut short, and a shard's old directory not yet deleted.
    (root / "memories.0123abcd").mkdir()
    (root / "events").mkdir()
    (root / "events" / "segment").write_text("old")

    reopened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await reopened.open()
    try:
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(current.values())
        assert [await reopened.get(m.id) for m in kept] == kept
    finally:
        await reopened.close()
