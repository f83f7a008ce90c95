"""Which paths are the memory API's, under its configurable prefix (``server.memory_api_prefix``).

The key middleware and the pass-through both ask this one question, so a path is never read as
"Authorization is a Mnemo key" by one and relayed upstream with that Authorization by the other.
"""

from __future__ import annotations

# The memory API's resources: their whole subtrees are Mnemo's, whatever the method or the depth.
MEMORY_RESOURCES = ("memories", "users", "events", "requests", "imports")


def memory_roots(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}/{resource}" for resource in MEMORY_RESOURCES)


def is_memory_path(path: str, prefix: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in memory_roots(prefix))
