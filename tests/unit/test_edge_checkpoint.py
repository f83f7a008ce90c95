"""mnemo.store.edge_checkpoint with stand-in shards: when flushes run, what waits for them, and
what a failing flush leaves (Qdrant Edge itself: tests/integration/test_store_checkpoint.py)."""

from __future__ import annotations

import asyncio
import mmap
import os
import threading
from pathlib import Path

import pytest

from mnemo.store import edge_pages
from mnemo.store.edge_checkpoint import Checkpoints


class Panic(BaseException):
    """What pyo3 raises for a panic in Rust: a BaseException, not an Exception."""


class Shard:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.flushes = 0
        self.fail = fail

    def flush(self) -> None:
        self.started.set()
        self.release.wait(5)
        self.flushes += 1
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail


async def flush_under_way(tmp_path: Path, shard: Shard) -> tuple[Checkpoints, asyncio.Task[None]]:
    """Checkpoints over one shard, and a checkpoint whose flush has started and waits on the shard."""
    checkpoints = Checkpoints(tmp_path, lambda: {"memories": shard}, every_s=3600)  # type: ignore[dict-item]
    checkpoints.wrote("memories")
    flushing = asyncio.create_task(checkpoints.flush_written())
    await asyncio.to_thread(shard.started.wait, 5)
    return checkpoints, flushing


async def test_stopping_waits_for_a_running_flush(tmp_path: Path) -> None:
    shard = Shard()
    checkpoints, flushing = await flush_under_way(tmp_path, shard)
    flushing.cancel()  # the caller goes away; the flush's thread does not
    stopping = asyncio.create_task(checkpoints.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # a shard must not be closed under its flush
    shard.release.set()
    await asyncio.wait_for(stopping, 5)
    assert shard.flushes == 1


async def test_a_cancelled_wait_for_a_flush_still_waits_for_it_then_is_cancelled(tmp_path: Path) -> None:
    """What a rebuild cancelled by close() does before it closes the old shard."""
    shard = Shard()
    checkpoints, flushing = await flush_under_way(tmp_path, shard)
    waiting = asyncio.create_task(checkpoints.idle())
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.sleep(0.1)
    assert not waiting.done()
    shard.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    await flushing
    assert shard.flushes == 1


async def test_a_failed_flush_is_tried_again_at_the_next_checkpoint(tmp_path: Path) -> None:
    shard = Shard(fail=Panic("flush panicked"))
    shard.release.set()
    checkpoints = Checkpoints(tmp_path, lambda: {"memories": shard}, every_s=3600)  # type: ignore[dict-item]
    checkpoints.wrote("memories")
    await checkpoints.flush_written()  # logged, not raised: the WAL still holds the writes
    await checkpoints.flush_written()
    assert shard.flushes == 2
    await checkpoints.flush_written()  # nothing written since: no flush
    assert shard.flushes == 2


async def test_checkpoints_run_only_after_writes_and_survive_a_failing_one(tmp_path: Path) -> None:
    shard = Shard(fail=OSError("disk full"))
    shard.release.set()
    checkpoints = Checkpoints(tmp_path, lambda: {"memories": shard}, every_s=0.01)  # type: ignore[dict-item]
    checkpoints.start()
    try:
        await asyncio.sleep(0.1)
        assert shard.flushes == 0
        checkpoints.wrote("memories")
        for _ in range(200):
            if shard.flushes == 2:
                break
            await asyncio.sleep(0.01)
        assert shard.flushes == 2  # failed once, then flushed by a later checkpoint
    finally:
        await checkpoints.stop()


def test_giving_back_pages_never_raises_whatever_is_mapped(tmp_path: Path) -> None:
    """A file mapped under a name that is not UTF-8 (any library may map one) makes
    /proc/self/maps undecodable as text."""
    name = os.fsencode(tmp_path) + b"/caf\xe9.bin"
    with open(name, "wb") as file:
        file.write(b"\0" * 4096)
    with open(name, "rb") as file, mmap.mmap(file.fileno(), 4096, access=mmap.ACCESS_READ):
        assert edge_pages.release_write_only_pages(tmp_path / "store") == 0


def test_giving_back_pages_logs_a_failure_and_returns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(directory: Path, maps: str) -> list[tuple[int, int]]:
        raise ValueError("unexpected maps line")

    monkeypatch.setattr(edge_pages, "write_only_mappings", broken)
    assert edge_pages.release_write_only_pages(tmp_path) == 0
    assert "could not give back" in caplog.text
