"""mnemo.malloc_tuning: the arena cap is set through glibc's mallopt unless the operator chose one,
and a trim gives freed pages back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnemo import malloc_tuning


def test_an_operators_malloc_arena_max_is_left_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc_tuning.limit_arenas() is False


def test_the_cap_bounds_the_arenas_threads_get() -> None:
    """Eight threads allocating at once: without the cap glibc gives them up to eight arenas
    (malloc_info lists one <heap> each), with it two."""
    script = """
import ctypes, sys, threading
from mnemo import malloc_tuning
if sys.argv[1] == "capped":
    assert malloc_tuning.limit_arenas(2)
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(20000):
        bytearray(2048)
threads = [threading.Thread(target=churn) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.open_memstream.restype = ctypes.c_void_p
buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream)); libc.fclose(ctypes.c_void_p(stream))
print(buffer.value.decode().count("<heap nr="))
"""
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}

    def heaps(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env_free)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert heaps("capped") <= 2
    assert heaps("default") > 2


def test_a_trim_gives_back_pages_freed_amid_live_memory() -> None:
    script = """
from mnemo import malloc_tuning
def rss_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))
blocks = [bytearray(16000) for _ in range(8000)]  # 128 MB of heap (under the mmap threshold)
del blocks[::2]  # free every other block: the heap's top stays in use, so nothing goes back by itself
before = rss_kb()
assert malloc_tuning.trim()
print(before - rss_kb())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 40_000  # KB given back of the 64 MB freed
