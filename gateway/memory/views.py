"""The memory API's JSON: memories, scored hits, events and lists, with user ids as the caller's
key may see them (a tenant's users without their tenant prefix)."""

from __future__ import annotations

from typing import Any

from gateway.access import Access
from mnemo.models import Memory, MemoryEvent, ScoredMemory


def memory_json(memory: Memory, access: Access) -> dict[str, Any]:
    return {"object": "memory", **memory.model_dump(mode="json"), "user_id": access.public_user(memory.user_id)}


def scored_json(hit: ScoredMemory, access: Access) -> dict[str, Any]:
    return {**memory_json(hit.memory, access), "score": hit.score}


def event_json(event: MemoryEvent, access: Access) -> dict[str, Any]:
    return {"object": "memory.event", **event.model_dump(mode="json"), "user_id": access.public_user(event.user_id)}


def list_json(data: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, **extra}
