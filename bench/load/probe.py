"""What a process holds, read from /proc: resident memory (and where it is), file descriptors,
TCP connections."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Snapshot:
    rss_mb: float
    fds: int
    threads: int
    tcp: dict[str, int] = field(default_factory=dict)  # connections by state (ESTABLISHED, LISTEN, ...)
    unix_sockets: int = 0  # to the embedded Redis (the queue's connection pool)
    children_rss_mb: float = 0.0  # the embedded redis-server
    fd_kinds: dict[str, int] = field(default_factory=dict)  # socket, pipe, store file, ...
    memory: dict[str, float] = field(default_factory=dict)  # RSS MB by kind of mapping (memory_by_kind)


def status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def fd_kind(target: str) -> str:
    if target.startswith(("socket:", "pipe:", "anon_inode:")):
        return target.split(":", 1)[0]
    if "/mnemo-data/" in target:
        return "data dir: " + target.split("/mnemo-data/", 1)[1].split("/", 1)[0]
    return "other file"


def fd_kinds(pid: int) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            kinds[fd_kind(os.readlink(f"/proc/{pid}/fd/{fd}"))] += 1
        except OSError:
            continue
    return dict(sorted(kinds.items()))


MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
MODEL_FILES = "minilm-fused-"  # the model cache's build directories (mnemo/model_cache.py)


def memory_by_kind(pid: int, data_dir: Path) -> dict[str, float]:
    """RSS by kind of mapping, MB, from /proc/<pid>/smaps, largest first."""
    kinds: Counter[str] = Counter()
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if MAPPING.match(line):
            fields = line.split()
            kind = classify(fields[5] if len(fields) > 5 else "", data_dir)
        elif line.startswith("Rss:"):
            kinds[kind] += int(line.split()[1])
    return {name: round(kb / 1024, 1) for name, kb in kinds.most_common()}


def classify(path: str, data_dir: Path) -> str:
    if path == "[heap]":
        return "Python heap (brk)"
    if path == "" or path.startswith("[anon"):
        return "anonymous (native allocations, Python arenas, thread stacks)"
    if path.startswith("["):
        return "other"
    if MODEL_FILES in path:
        return "model files (mapped word table)"
    if path.startswith(str(data_dir)):
        return "store files (Qdrant Edge)"
    if "site-packages/" in path:
        return "library: " + path.split("site-packages/")[1].split("/")[0].split(".")[0]
    if "libpython" in path or path.endswith("/python3.11"):
        return "library: python"
    return "library: system"


def snapshot(pid: int, data_dir: Path | None = None) -> Snapshot:
    process = psutil.Process(pid)
    states = Counter(connection.status for connection in process.net_connections(kind="tcp"))
    unix = len(process.net_connections(kind="unix"))
    children = 0.0
    for child in process.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return Snapshot(
        rss_mb=round(status_field(pid, "VmRSS") / 1024, 1),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=status_field(pid, "Threads"),
        tcp=dict(sorted(states.items())),
        unix_sockets=unix,
        children_rss_mb=round(children / 2**20, 1),
        fd_kinds=fd_kinds(pid),
        memory=memory_by_kind(pid, data_dir) if data_dir is not None else {},
    )
