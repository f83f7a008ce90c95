"""Reading memory over REST: list (with point-in-time and metadata filters), get, search, and a
memory's whole history (every version of it and every event that touched one)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.memory.params import (
    body_int,
    body_number,
    body_text,
    load_memory,
    metadata_filters,
    optional_id,
    parse_bool,
    parse_page,
    parse_time,
    read_body,
    services_of,
    user_id_of,
)
from gateway.memory.views import event_json, list_json, memory_json, scored_json
from gateway.services import Services
from mnemo.models import Memory, MemoryEvent, Scope

MAX_CHAIN = 1000  # versions followed before giving up on a (corrupt) cyclic chain
MAX_SEARCH_LIMIT = 100


def query_scope(request: Request) -> Scope:
    query = request.query_params
    return Scope(
        user_id=user_id_of(request, query),
        agent_id=optional_id(query, "agent_id"),
        session_id=optional_id(query, "session_id"),
    )


async def list_memories(request: Request) -> JSONResponse:
    services = services_of(request)
    query = request.query_params
    scope = query_scope(request)
    limit, offset = parse_page(query)
    include_invalidated = parse_bool(query.get("include_invalidated"), "include_invalidated")
    as_of = parse_time(query.get("as_of"), "as_of")
    after = parse_time(query.get("created_after"), "created_after")
    before = parse_time(query.get("created_before"), "created_before")
    filters = metadata_filters(query)
    memories = await services.core.store.list(
        scope,
        include_invalidated=include_invalidated,
        limit=limit,
        offset=offset,
        as_of=as_of,
        created_after=after,
        created_before=before,
        metadata=filters,
    )
    access = access_of(request)
    return JSONResponse(list_json([memory_json(m, access) for m in memories], limit=limit, offset=offset))


async def get_memory(request: Request) -> JSONResponse:
    access = access_of(request)
    memory = await load_memory(services_of(request), request.path_params["memory_id"], access)
    return JSONResponse(memory_json(memory, access))


async def search_memories(request: Request) -> JSONResponse:
    services = services_of(request)
    body = await read_body(request)
    query = body_text(body, "query", required=True) or ""
    scope = Scope(user_id=user_id_of(request, body), agent_id=optional_id(body, "agent_id"))
    settings = services.settings.memory
    limit = body_int(body, "limit", settings.top_k, 1, MAX_SEARCH_LIMIT)
    threshold = body_number(body, "threshold", settings.score_threshold, -1.0, 1.0)
    hits = await services.retriever.search(scope, query, limit=limit, threshold=threshold)
    access = access_of(request)
    return JSONResponse(list_json([scored_json(hit, access) for hit in hits]))


async def version_chain(services: Services, memory: Memory) -> list[Memory]:
    """Every version of a memory: back along ``supersedes``, forward along ``superseded_by``."""
    chain = {memory.id: memory}
    for step in ("supersedes", "superseded_by"):
        current = memory
        while (next_id := getattr(current, step)) and next_id not in chain and len(chain) < MAX_CHAIN:
            found = await services.core.store.get(next_id)
            if found is None:
                break
            chain[found.id] = current = found
    return sorted(chain.values(), key=lambda m: (m.version, m.created_at))


async def chain_events(services: Services, chain: list[Memory]) -> list[MemoryEvent]:
    events: dict[str, MemoryEvent] = {}
    for version in chain:
        for event in await services.core.store.list_events(version.user_id, memory_id=version.id):
            events.setdefault(event.id, event)
    return sorted(events.values(), key=lambda e: e.created_at)


async def memory_history(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    memory = await load_memory(services, request.path_params["memory_id"], access)
    chain = await version_chain(services, memory)
    events = await chain_events(services, chain)
    return JSONResponse(
        {
            "object": "memory.history",
            "id": memory.id,
            "versions": [memory_json(m, access) for m in chain],
            "events": [event_json(e, access) for e in events],
        }
    )
