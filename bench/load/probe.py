"""What a process holds, read from /proc: resident memory, file descriptors, TCP connections."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

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


def snapshot(pid: int) -> Snapshot:
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
    )
