"""Erasure that reaches the disk, for the embedded store: rebuilding a shard without its deleted points.

Qdrant Edge deletes a point by marking it. Its payload (the memory's text) stays in the segment's
payload pages and the upsert that wrote it stays in the WAL, until the segment is optimised; the
embedded store is never optimised, as ``optimize`` holds the GIL for its whole run (5 s at 10k
points, minutes at 100k), which would freeze the gateway. So after an erasure the store copies
the points still alive into a new shard in a new directory, page by page (chats go on between
pages; writes wait), makes it durable, records it as the shard's directory, and deletes the old
directory with everything it held.

``shards.json`` names each shard's current directory (absent: the shard's own name). Anything
else named after a shard is a leftover (a copy a crash interrupted, or an old directory not yet
deleted) and is removed when the store opens. A marker file says an erasure has not reached the
disk yet; it is removed once every shard is rebuilt, and a store opened with it present rebuilds
again, so a crash or a restart in the middle delays the erasure but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import qdrant_edge as qe

PENDING_MARKER = "erasure-pending"
POINTER_FILE = "shards.json"
# Points copied per step; each step holds the event loop (~10 ms on a slow 2-vCPU host).
COPY_PAGE = 64


def current_directories(directory: Path) -> dict[str, str]:
    path = directory / POINTER_FILE
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}


def set_current_directory(directory: Path, name: str, current: str) -> None:
    """Atomically, and durably: the shard's data is only reachable through this record. The
    rename is the last step that can fail, so a caller seeing an error may delete ``current``."""
    pointers = current_directories(directory) | {name: current}
    tmp = directory / (POINTER_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as file:
        json.dump(pointers, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, directory / POINTER_FILE)
    with contextlib.suppress(OSError):  # the rename stands either way; this only hurries it to disk
        _fsync(directory)


# Vector storage types (a segment's segment.json) that read vectors from their files as needed.
ON_DISK_STORAGE = frozenset({"Mmap", "ChunkedMmap"})


def holds_vectors_in_memory(shard: Path) -> bool:
    """Whether a segment of the shard keeps its vectors in memory whole (written before the
    store asked for Cold vectors). Unreadable records count as no: the rebuild is an economy."""
    for record in shard.glob("segments/*/segment.json"):
        try:
            vectors = json.loads(record.read_text(encoding="utf-8"))["config"]["vector_data"]
            if any(vector["storage_type"] not in ON_DISK_STORAGE for vector in vectors.values()):
                return True
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return False


def new_directory_name(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:12]}"


def leftovers(directory: Path, name: str, current: str) -> list[Path]:
    """Directories named after the shard that are not its current one."""
    return [
        path
        for path in directory.iterdir()
        if path.is_dir() and path.name != current and (path.name == name or path.name.startswith(name + "."))
    ]


async def copy_live_points(old: qe.EdgeShard, new: qe.EdgeShard) -> int:
    """Every point of ``old`` that is not deleted, with its vectors and payload, into ``new``."""
    offset: qe.PointId | None = None
    copied = 0
    while True:
        request = qe.ScrollRequest(offset=offset, limit=COPY_PAGE, with_payload=True, with_vector=True)
        page, offset = old.scroll(request)
        if page:
            points = [qe.Point(record.id, record.vector or {}, record.payload) for record in page]
            new.update(qe.UpdateOperation.upsert_points(points))
            copied += len(page)
        if offset is None:
            return copied
        await asyncio.sleep(0)  # let chats run between pages


def fsync_tree(path: Path) -> None:
    """Every file and directory under ``path`` to stable storage. Plain fsyncs, run on a thread:
    they release the GIL, where the shard's own flush would hold it (and the gateway) throughout."""
    for root, _, names in os.walk(path):
        for name in names:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def _fsync(path: Path) -> None:
    """A file, or a directory (its entries: a rename or a new file in it)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
