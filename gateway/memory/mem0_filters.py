"""Reading the mem0 platform API's entity filters and writing its JSON shapes, for
gateway.memory.mem0. Mem0's user_id / agent_id / run_id are Mnemo's user / agent / session;
filters are a flat mapping or an ``AND`` of single-entity mappings (v2 filters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from gateway.access import Access, access_of
from gateway.errors import bad_request
from gateway.identity import validate_id
from mnemo.models import Memory, MemoryEvent, Scope, ScoredMemory

ENTITIES = {"user_id": "user_id", "agent_id": "agent_id", "run_id": "session_id"}


def flatten_filters(filters: Any) -> dict[str, Any]:
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise bad_request("`filters` must be an object", param="filters")
    if "OR" in filters or "NOT" in filters:
        raise bad_request("only AND filters are supported", param="filters")
    flat = {key: value for key, value in filters.items() if key != "AND"}
    clauses = filters.get("AND", [])
    if not isinstance(clauses, list) or not all(isinstance(clause, dict) for clause in clauses):
        raise bad_request("`filters.AND` must be an array of objects", param="filters.AND")
    for clause in clauses:
        flat.update(flatten_filters(clause))
    return flat


def entity(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value in (None, "", "*"):
        return None
    if not isinstance(value, str):
        raise bad_request(f"`{name}` must be a string", param=name)
    return validate_id(value, name)


def read_entities(values: Mapping[str, Any]) -> tuple[Scope, dict[str, Any] | None]:
    """The scope and metadata filter named by top-level fields and ``filters``; user_id is required."""
    merged = {**flatten_filters(values.get("filters")), **{k: v for k, v in values.items() if k in ENTITIES}}
    unknown = sorted(set(merged) - set(ENTITIES) - {"metadata"})
    if unknown:
        raise bad_request(f"unsupported filter {unknown[0]!r}", param=f"filters.{unknown[0]}")
    user_id = entity(merged, "user_id")
    if user_id is None:
        raise bad_request("a user_id is required (Mnemo's memories always belong to a user)", param="user_id")
    metadata = merged.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("`filters.metadata` must be an object", param="filters.metadata")
    scope = Scope(user_id=user_id, agent_id=entity(merged, "agent_id"), session_id=entity(merged, "run_id"))
    return scope, metadata or None


def request_scope(request: Request, values: Mapping[str, Any]) -> tuple[Scope, dict[str, Any] | None]:
    scope, metadata = read_entities(values)
    return scope.model_copy(update={"user_id": access_of(request).user(scope.user_id)}), metadata


def mem0_memory(memory: Memory, access: Access) -> dict[str, Any]:
    created = memory.created_at.isoformat()
    return {
        "id": memory.id,
        "memory": memory.text,
        "user_id": access.public_user(memory.user_id),
        "agent_id": memory.agent_id,
        "run_id": memory.session_id,
        "metadata": memory.metadata or None,
        "categories": [],
        "created_at": created,
        "updated_at": created,  # a change makes a new version, created at the time of the change
        "expiration_date": memory.expires_at.date().isoformat() if memory.expires_at else None,
    }


def mem0_scored(hit: ScoredMemory, access: Access) -> dict[str, Any]:
    return {**mem0_memory(hit.memory, access), "score": hit.score}


def mem0_event(event: MemoryEvent, access: Access) -> dict[str, Any]:
    created = event.created_at.isoformat()
    return {
        "id": event.id,
        "memory_id": event.memory_id,
        "user_id": access.public_user(event.user_id),
        "event": event.action,
        "old_memory": event.old_text,
        "new_memory": event.new_text,
        "reason": event.reason,
        "actor": event.actor,
        "source_request_id": event.source_request_id,
        "created_at": created,
        "updated_at": created,
    }
