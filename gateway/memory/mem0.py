"""The subset of Mem0's platform REST API that the ``mem0ai`` SDK's ``MemoryClient`` calls for
add, search, get_all, get, update, delete, delete_all, history and users, mounted under ``/mem0``:
``MemoryClient(api_key=..., host="http://<mnemo>/mem0")``.

Mnemo keeps every version, so a Mem0 id stays usable after an update: get, update, delete and
history follow the id to its latest version. Deleting invalidates (kept in history), and
delete_all only ever touches the one scope it names (a user is always required).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.access import Access, access_of
from gateway.errors import bad_request
from gateway.memory.mem0_filters import mem0_event, mem0_memory, mem0_scored, request_scope
from gateway.memory.params import (
    MAX_LIMIT,
    body_int,
    body_number,
    load_memory,
    not_found,
    parse_int,
    read_body,
    services_of,
)
from gateway.memory.reads import MAX_CHAIN, MAX_SEARCH_LIMIT, chain_events, version_chain
from gateway.memory.user_list import mem0_users
from gateway.memory.writes import (
    apply_correction,
    enqueue_exchange,
    invalidate_memory,
    read_expiry,
    read_messages,
    read_metadata,
    store_facts,
    user_texts,
)
from gateway.services import Services
from mnemo.models import Memory, Scope

PAGE = 500


async def ping(request: Request) -> JSONResponse:
    access = access_of(request)
    # The SDK needs both ids to build its project helper; a tenant is Mnemo's nearest thing to a project.
    project = access.tenant or "default"
    return JSONResponse({"status": "ok", "org_id": "mnemo", "project_id": project, "user_email": None})


async def add_memories(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    body = await read_body(request)
    scope, _ = request_scope(request, body)
    metadata = read_metadata(body)
    expires_at = read_expiry(body, "expiration_date")  # the SDK sends a date: "2026-12-31"
    limits = services.settings.limits
    messages = read_messages(body, limits.max_messages_per_write)
    infer = body.get("infer", True)
    if not isinstance(infer, bool):
        raise bad_request("`infer` must be a boolean", param="infer")
    if infer:
        job_id, request_id = await enqueue_exchange(services, scope, messages, metadata, expires_at)
        return JSONResponse({"results": [], "status": "PENDING", "event_id": job_id, "request_id": request_id})
    texts = user_texts(messages, limits.max_memory_chars)
    memories = await store_facts(services, scope, texts, metadata, expires_at)
    return JSONResponse({"results": [{**mem0_memory(m, access), "event": "ADD"} for m in memories]})


async def scope_memories(services: Services, scope: Scope, metadata: dict[str, Any] | None) -> list[Memory]:
    """Every current memory of the scope, newest first."""
    memories: list[Memory] = []
    while True:
        page = await services.core.store.list(scope, limit=PAGE, offset=len(memories), metadata=metadata)
        memories += page
        if len(page) < PAGE:
            return memories


async def get_all(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    body = await read_body(request)
    scope, metadata = request_scope(request, body)
    page = parse_int(request.query_params.get("page"), "page", 1, 1, 10**6)
    size = parse_int(request.query_params.get("page_size"), "page_size", 100, 1, MAX_LIMIT)
    memories = await scope_memories(services, scope, metadata)
    start = (page - 1) * size
    results = [mem0_memory(m, access) for m in memories[start : start + size]]
    more = start + size < len(memories)
    url = str(request.url.remove_query_params(["page"]))
    return JSONResponse(
        {
            "count": len(memories),
            "next": f"{url}{'&' if '?' in url else '?'}page={page + 1}" if more else None,
            "previous": f"{url}{'&' if '?' in url else '?'}page={page - 1}" if page > 1 else None,
            "results": results,
        }
    )


async def search(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    body = await read_body(request)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad_request("`query` must be a non-empty string", param="query")
    scope, metadata = request_scope(request, body)
    limit = body_int(body, "top_k", services.settings.memory.top_k, 1, MAX_SEARCH_LIMIT)
    threshold = body_number(body, "threshold", services.settings.memory.score_threshold, -1.0, 1.0)
    hits = await services.retriever.search(scope, query, limit=limit, threshold=threshold)
    hits = [
        hit
        for hit in hits
        if scope.session_id in (None, hit.memory.session_id)
        and all(hit.memory.metadata.get(key) == value for key, value in (metadata or {}).items())
    ]
    return JSONResponse({"results": [mem0_scored(hit, access) for hit in hits]})


async def current_version(services: Services, memory_id: str, access: Access) -> Memory:
    """The latest version of a memory; 404 once it was deleted (or never existed)."""
    memory = await load_memory(services, memory_id, access)
    for _ in range(MAX_CHAIN):
        if memory.superseded_by is None:
            break
        newer = await services.core.store.get(memory.superseded_by)
        if newer is None:
            break
        memory = newer
    if not memory.is_valid:
        raise not_found(memory_id)
    return memory


async def get_memory(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    memory = await current_version(services, request.path_params["memory_id"], access)
    return JSONResponse(mem0_memory(memory, access))


async def update_memory(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    body = await read_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("`text` must be a non-empty string (Mnemo updates a memory's text)", param="text")
    old = await current_version(services, request.path_params["memory_id"], access)
    new = await apply_correction(services, old, text.strip(), "updated via the mem0 API")
    return JSONResponse(mem0_memory(new, access))


async def delete_memory(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    memory = await current_version(services, request.path_params["memory_id"], access)
    await invalidate_memory(services, memory, "deleted via the mem0 API")
    return JSONResponse({"message": "Memory deleted successfully!"})


async def delete_all(request: Request) -> JSONResponse:
    services = services_of(request)
    scope, metadata = request_scope(request, request.query_params)
    memories = await scope_memories(services, scope, metadata)
    for memory in memories:
        await invalidate_memory(services, memory, "deleted via the mem0 API (delete_all)")
    return JSONResponse({"message": "Memories deleted successfully!", "deleted": len(memories)})


async def memory_history(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    memory = await load_memory(services, request.path_params["memory_id"], access)
    events = await chain_events(services, await version_chain(services, memory))
    return JSONResponse([mem0_event(event, access) for event in events])


def mem0_routes() -> list[Route]:
    """Paths as the SDK sends them (trailing slashes included), relative to the /mem0 mount."""
    return [
        Route("/v1/ping/", ping, methods=["GET"]),
        Route("/v3/memories/add/", add_memories, methods=["POST"]),
        Route("/v3/memories/", get_all, methods=["POST"]),
        Route("/v3/memories/search/", search, methods=["POST"]),
        Route("/v1/memories/", delete_all, methods=["DELETE"]),
        Route("/v1/memories/{memory_id}/", get_memory, methods=["GET"]),
        Route("/v1/memories/{memory_id}/", update_memory, methods=["PUT"]),
        Route("/v1/memories/{memory_id}/", delete_memory, methods=["DELETE"]),
        Route("/v1/memories/{memory_id}/history/", memory_history, methods=["GET"]),
        Route("/v1/entities/", mem0_users, methods=["GET"]),
    ]
