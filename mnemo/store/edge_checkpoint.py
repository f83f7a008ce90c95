"""Flushing the embedded store's shards every so often, off the event loop.

A write is durable once it is in a shard's WAL (see ``mnemo.store.edge``), but Qdrant Edge only
drops WAL segments that a flush has acknowledged: never flushed, a shard kept every 32 MB segment
it filled (five after 75,000 writes, ~14,000 writes a segment) for as long as the process ran,
and a restart after a crash replayed them all. A checkpoint flushes each shard that was written
since the last one, so the WAL on disk stays at a few segments and a restart replays at most
``every_s`` seconds of writes.

``flush`` syncs the shard's files (17-70 ms for 1,000-20,000 new points on this host) and lets
go of the GIL meanwhile, so it runs in a thread and the gateway goes on answering. A shard must
not be closed under a flush: the store waits for ``idle`` before closing one. After the flushes,
the pages of the files only ever written go back to the kernel (``mnemo.store.edge_pages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import qdrant_edge as qe

from mnemo.store.edge_pages import release_write_only_pages

logger = logging.getLogger(__name__)

CHECKPOINT_S = 30.0


class Checkpoints:
    def __init__(
        self, directory: Path, shards: Callable[[], Mapping[str, qe.EdgeShard]], every_s: float = CHECKPOINT_S
    ) -> None:
        self._directory = directory
        self._shards = shards  # the store's current shards (a rebuild replaces one)
        self._every_s = every_s
        self._written: set[str] = set()  # shards written since their last flush began
        self._flushing: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def wrote(self, name: str) -> None:
        self._written.add(name)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mnemo-store-checkpoints")

    async def stop(self) -> None:
        """No more checkpoints; returns once none is running (the store then closes its shards)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.idle()

    async def idle(self) -> None:
        """Until no flush is running. A cancelled caller still waits for it (nothing stops the
        flush's thread, and the caller is about to close the shard), then is cancelled."""
        cancelled = False
        while self._flushing is not None and not self._flushing.done():
            try:
                await asyncio.shield(self._flushing)
            except asyncio.CancelledError:
                cancelled = True
            except BaseException:
                pass  # the flush's outcome is flush_written's to report
        if cancelled:
            raise asyncio.CancelledError

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.flush_written()

    async def flush_written(self) -> None:
        """Flush every shard written since its last flush, one at a time, then give back the
        pages of their write-only files."""
        if not self._written:
            return
        for name in sorted(self._written):
            self._written.discard(name)  # writes made during the flush mark it again
            shard = self._shards().get(name)  # looked up now: a rebuild may have replaced it
            if shard is None:
                continue
            self._flushing = asyncio.ensure_future(asyncio.to_thread(shard.flush))
            try:
                await asyncio.shield(self._flushing)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # also a panic in Edge (pyo3's PanicException is a BaseException)
                # The WAL still holds every write: nothing is lost, only kept longer.
                self._written.add(name)
                logger.warning("could not flush the %s shard (%r); the next checkpoint tries again", name, exc)
        await asyncio.to_thread(release_write_only_pages, self._directory)
