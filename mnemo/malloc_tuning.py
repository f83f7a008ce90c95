"""How a serving process uses glibc's malloc: few arenas, and freed memory given back.

glibc gives a thread that finds the main heap locked an arena of its own, up to eight a core, and
each keeps the memory it once held: the gateway's event loop, the embedder's lanes and the store's
threads spread their allocations over a dozen half-empty heaps. Two arenas (what
``MALLOC_ARENA_MAX=2`` does) made ``mnemo up`` 6 MB smaller at ready and 12 MB smaller after a
load test (bench/load: 219 -> 214 MB, 285 -> 273 MB after 30 s of 64 streaming clients and the
worker's catch-up); its threads mostly run outside Python's allocator (onnxruntime keeps its own
arena), so they seldom wait on each other's.

Freed memory stays in the arenas until the top of a heap is free: after that same load,
``malloc_trim`` gave back another 12 MB (of pages freed amid live ones). A trim takes 5-13 ms and
locks each arena meanwhile, so it runs once a minute, in a thread (ctypes lets go of the GIL).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2
TRIM_EVERY_S = 60.0


@functools.cache  # looked up once: trims and checkpoints run for the process's life
def _libc() -> Any:
    if sys.platform == "win32":  # CDLL(None) is no C library there
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap this process's malloc arenas, before it starts threads. False where the C library has
    no such setting (musl), or when the operator set MALLOC_ARENA_MAX, which glibc honours itself."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Give the pages malloc holds free back to the system; True if any were."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(malloc_trim(0))


async def trim_forever(every_s: float = TRIM_EVERY_S) -> None:
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim)
