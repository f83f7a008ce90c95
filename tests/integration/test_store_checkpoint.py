"""The embedded store flushes its shards every so often (mnemo.store.edge_checkpoint): Qdrant
Edge drops WAL segments only once a flush has acknowledged them, so a store never flushed kept
every write in its WAL on disk, and a restart after a crash replayed them all.

A flush records the last write it acknowledged in the shard's ``wal/first-index``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mnemo.store import edge_checkpoint
from mnemo.store.edge import EdgeMemoryStore
from tests.integration.test_store_contract import IDENTITY, event, memory, put

EVERY_S = 0.05


def acknowledged(root: Path, shard: str) -> int | None:
    """The last WAL entry a flush acknowledged (0-based), None before any flush."""
    marker = next((root / "mnemo").glob(f"{shard}*/wal/first-index"), None)
    return None if marker is None else int(json.loads(marker.read_text())["ack_index"])


async def until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeMemoryStore]:
    opened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY, checkpoint_s=EVERY_S)
    await opened.open()
    yield opened
    await opened.close()


async def test_writes_are_flushed_within_a_checkpoint_without_closing_the_store(
    store: EdgeMemoryStore, tmp_path: Path
) -> None:
    await asyncio.sleep(4 * EVERY_S)
    before = acknowledged(tmp_path, "memories")  # the index creation at open, if anything

    for number in range(3):
        await put(store, memory(f"fact {number}"))
    await until(lambda: (acknowledged(tmp_path, "memories") or -1) > (before or -1))
    await store.add_events([event("m1")])
    await until(lambda: acknowledged(tmp_path, "events") is not None)


async def test_an_idle_store_does_not_flush(
    store: EdgeMemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put(store, memory("one fact"))
    await until(lambda: acknowledged(tmp_path, "memories") is not None)
    flushes: list[str] = []
    real = edge_checkpoint.Checkpoints.flush_written

    async def counted(self: edge_checkpoint.Checkpoints) -> None:
        flushes.extend(sorted(self._written))
        await real(self)

    monkeypatch.setattr(edge_checkpoint.Checkpoints, "flush_written", counted)
    await asyncio.sleep(10 * EVERY_S)
    assert flushes == []
    await put(store, memory("another fact"))
    await until(lambda: flushes == ["memories"])


async def test_closing_waits_for_a_running_flush_and_keeps_every_write(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY, checkpoint_s=0.001)
    await store.open()
    written = [memory(f"fact {number}") for number in range(200)]
    for item in written:
        await put(store, item)
        await asyncio.sleep(0)  # checkpoints (a flush, then pages given back) start between the writes
    await store.close()  # closes no shard under a flush, whatever its timing

    reopened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await reopened.open()
    try:
        assert [await reopened.get(item.id) for item in written] == written
    finally:
        await reopened.close()


async def test_an_erasure_rebuild_and_checkpoints_run_together(store: EdgeMemoryStore, tmp_path: Path) -> None:
    """A rebuild closes the old shard only once no checkpoint is flushing it."""
    kept = [memory(f"kept {number}", user="stays") for number in range(50)]
    await put(store, *kept, memory("erase me", user="gone"))
    for round_ in range(5):
        await store.delete_user("gone")
        await put(store, memory(f"written while rebuilding {round_}", user="stays"))
        await asyncio.sleep(EVERY_S)
    await store.wait_for_erasures()
    assert [await store.get(item.id) for item in kept] == kept
    before = acknowledged(tmp_path, "memories")
    await put(store, memory("after the rebuilds", user="stays"))
    await until(lambda: (acknowledged(tmp_path, "memories") or -1) > (before or -1))
