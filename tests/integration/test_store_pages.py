"""The embedded store gives back the pages of the files it only writes (mnemo.store.edge_pages):
its WAL and the files that persist its payload indexes, which a load reads in whole. That writes
racing checkpoints (each gives pages back) lose nothing: test_store_checkpoint."""

from __future__ import annotations

from pathlib import Path

from mnemo.models import Scope
from mnemo.store import edge_pages
from mnemo.store.edge import EdgeMemoryStore
from tests.integration.test_store_contract import IDENTITY, event, memory, put


def resident_kb(directory: Path, write_only: bool) -> int:
    """RSS of this process's mappings of the store's files, write-only ones or the others."""
    total, counting = 0, False
    prefix = str(directory) + "/"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            path = fields[5] if len(fields) > 5 else ""
            counting = path.startswith(prefix) and bool(edge_pages.WRITE_ONLY.search(path)) == write_only
        elif line.startswith("Rss:") and counting:
            total += int(fields[1])
    return total


async def test_a_reopened_store_holds_no_pages_of_its_wal_and_index_files(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    facts = [memory(f"fact {n}", user=f"u{n % 4}") for n in range(20)]
    await put(store, *facts)
    await store.add_events([event(fact.id, user=fact.user_id) for fact in facts])
    await store.close()

    reopened = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await reopened.open()
    try:
        # A load reads each index's 4 MB page file in whole: eleven indexes were ~49 MB.
        assert resident_kb(tmp_path, write_only=True) < 2048
        assert [await reopened.get(fact.id) for fact in facts] == facts  # and everything still reads
        await put(reopened, memory("written after", user="u1"))
        assert len(await reopened.list(Scope(user_id="u1"))) == 6
    finally:
        await reopened.close()


async def test_a_checkpoint_gives_back_what_the_writes_since_the_last_one_touched(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY, checkpoint_s=3600)
    await store.open()
    try:
        await put(store, *[memory(f"a longer fact to fill the log, number {n} " * 8) for n in range(400)])
        assert resident_kb(tmp_path, write_only=True) > 256  # the WAL pages just written
        await store._checkpoints.flush_written()  # one checkpoint, now
        assert resident_kb(tmp_path, write_only=True) < 256
        assert len(await store.list(Scope(user_id="u1"), limit=500)) == 400
    finally:
        await store.close()


def test_only_shared_mappings_of_write_only_files_below_the_store_are_chosen() -> None:
    maps = "\n".join(
        [
            "7f00-7f10 rw-s 00000000 08:01 1 /data/mnemo/memories/wal/open-1",
            "7f10-7f20 rw-s 00000000 08:01 2 /data/mnemo/memories/segments/s/payload_index/abc-user_id-map/page_0.dat",
            "7f20-7f30 rw-s 00000000 08:01 3 /data/mnemo/memories/segments/s/payload_index/abc-created_-numeric/p.dat",
            "7f30-7f40 rw-s 00000000 08:01 4 /data/mnemo/memories/segments/s/payload_index/abc-user_id-null/flags.dat",
            "7f40-7f50 rw-s 00000000 08:01 5 /data/mnemo/memories/segments/s/vector_storage-dense/vectors/chunk_0.mmap",
            "7f50-7f60 rw-p 00000000 08:01 6 /data/mnemo/events/wal/open-1",
            "7f60-7f70 rw-s 00000000 08:01 7 /elsewhere/wal/open-1",
            "7f70-7f80 rw-p 00000000 00:00 0 ",
        ]
    )
    chosen = edge_pages.write_only_mappings(Path("/data/mnemo"), maps)
    assert chosen == [(0x7F00, 0x10), (0x7F10, 0x10), (0x7F20, 0x10)]
