"""Giving back the pages of the embedded store's files that the process only ever writes.

Qdrant Edge maps its files into memory. Two kinds are written at run time and never read back
until the next load: the WAL (a write is appended, and read again only to replay it after a
restart) and the files that persist the payload indexes (keyword and number indexes answer from
their copy in memory). Yet their pages stay resident: a WAL segment up to its 32 MB, and every
index's 4 MB page file, which a load reads in whole (5.1 MB a keyword index, 3 MB a number index:
49 MB for the store's eleven indexes even when it holds ten memories). ``MADV_PAGEOUT`` hands
them to the kernel: nothing is lost (the mappings are shared: a dirty page stays in the page
cache until written to its file), and a later write faults its page back in.

Vectors, payloads and the null-value flags are read by searches; their pages are left alone.
``MADV_PAGEOUT`` needs Linux 5.4; elsewhere this gives back nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MADV_PAGEOUT = 21  # linux/mman.h
# Paths (below the store's directory) of files only written while the store is open.
WRITE_ONLY = re.compile(r"/wal/|/payload_index/[^/]+-(map|numeric)/")


@functools.cache  # looked up once: trims and checkpoints run for the process's life
def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return madvise


def write_only_mappings(directory: Path, maps: str) -> list[tuple[int, int]]:
    """(start, length) of the shared mappings of write-only store files, from /proc/self/maps."""
    prefix = str(directory).rstrip("/") + "/"
    regions = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1][3:4] != "s":  # a private mapping's pages may hold its own writes
            continue
        path = fields[5].strip()
        if path.startswith(prefix) and WRITE_ONLY.search(path[len(prefix) - 1 :]):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            regions.append((start, end - start))
    return regions


def release_write_only_pages(directory: Path) -> int:
    """Hand the resident pages of the store's write-only files to the kernel; the bytes of the
    mappings it took the advice for. Safe at any moment: a mapping that is gone or replaced by
    the time of the call only gets a hint it ignores or a reclaim that loses nothing. An economy,
    so it never raises: a failure is logged and gives back nothing."""
    try:
        return _release(directory)
    except Exception:
        logger.warning("could not give back the store's write-only pages", exc_info=True)
        return 0


def _release(directory: Path) -> int:
    madvise = _madvise()
    if madvise is None:
        return 0
    try:
        # Any file may be mapped, under a name that is not UTF-8: decoded as file names are.
        maps = os.fsdecode(Path("/proc/self/maps").read_bytes())
    except OSError:
        return 0
    advised = 0
    for start, length in write_only_mappings(directory, maps):
        if madvise(start, length, MADV_PAGEOUT) == 0:
            advised += length
        elif ctypes.get_errno() == 22:  # EINVAL: a kernel without MADV_PAGEOUT
            return advised
    return advised
