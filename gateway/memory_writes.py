"""Changing memory over REST: add facts (or messages, verbatim or through the worker), correct a
memory (a new version, the old one invalidated), and delete one (invalidate, or erase its chain).
Every change is an event with actor "api"; ids derive from a fresh request id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.errors import GatewayError, bad_request
from gateway.identity import new_request_id
from gateway.memories import version_chain
from gateway.memory_params import (
    body_text,
    list_json,
    load_memory,
    map_core_errors,
    memory_json,
    optional_id,
    parse_bool,
    read_body,
    services_of,
    user_id_of,
)
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.messages import content_text, to_exchange_messages
from mnemo.models import Action, Memory, MemoryEvent, Scope, derived_id, utcnow
from mnemo.queue import Exchange

MAX_FACTS = 100
API_MODEL = "mnemo-api"  # the Exchange's model for messages sent to the worker through this API


def api_event(memory: Memory, action: Action, old: Memory | None, reason: str | None, key: str) -> MemoryEvent:
    return MemoryEvent(
        id=derived_id(key, "event"),
        memory_id=memory.id,
        user_id=memory.user_id,
        agent_id=memory.agent_id,
        action=action,
        previous_memory_id=old.id if old is not None and action == "UPDATE" else None,
        old_text=old.text if old is not None else None,
        new_text=memory.text if action in ("ADD", "UPDATE") else None,
        reason=reason,
        source_request_id=memory.source_request_id if action in ("ADD", "UPDATE") else None,
        actor="api",
        created_at=utcnow(),
    )


def read_scope(request: Request, body: dict[str, Any]) -> Scope:
    return Scope(
        user_id=user_id_of(request, body),
        agent_id=optional_id(body, "agent_id"),
        session_id=optional_id(body, "session_id"),
    )


def read_metadata(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_request("`metadata` must be an object", param="metadata")
    return metadata


def read_facts(body: dict[str, Any]) -> list[str]:
    facts = body.get("facts")
    if not isinstance(facts, list) or not 1 <= len(facts) <= MAX_FACTS:
        raise bad_request(f"`facts` must be an array of 1 to {MAX_FACTS} strings", param="facts")
    for index, fact in enumerate(facts):
        if not isinstance(fact, str) or not fact.strip():
            raise bad_request(f"facts[{index}] must be a non-empty string", param=f"facts[{index}]")
    return [fact.strip() for fact in facts]


def read_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a string `role`", param=f"messages[{index}]")
        if not isinstance(message.get("content"), str | list | None):
            raise bad_request(f"messages[{index}].content must be a string or an array", param=f"messages[{index}]")
    return messages


async def store_facts(services: Services, scope: Scope, facts: list[str], metadata: dict[str, Any]) -> list[Memory]:
    request_id, now = new_request_id(), utcnow()
    memories = [
        Memory(
            id=derived_id(request_id, str(number), "memory"),
            text=fact,
            **scope.model_dump(),
            created_at=now,
            source_request_id=request_id,
            actor="api",
            metadata=metadata,
        )
        for number, fact in enumerate(facts)
    ]
    events = [api_event(m, "ADD", None, "added via the API", f"{m.id}:add") for m in memories]
    async with map_core_errors():
        vectors = await services.core.embedder.embed(facts)
        await services.core.store.upsert(memories, vectors)
        await services.core.store.add_events(events)
    return memories


async def enqueue_messages(
    services: Services, scope: Scope, messages: list[dict[str, Any]], metadata: dict[str, Any]
) -> JSONResponse:
    job_id, request_id = await enqueue_exchange(services, scope, messages, metadata)
    return JSONResponse({"job_id": job_id, "request_id": request_id}, status_code=202)


async def enqueue_exchange(
    services: Services, scope: Scope, messages: list[dict[str, Any]], metadata: dict[str, Any]
) -> tuple[str, str]:
    """Send messages to the worker like a chat exchange; returns (job id, request id)."""
    if services.queue is None:
        raise GatewayError(503, "no queue is configured", type="server_error", code="queue_unavailable")
    now = utcnow()
    exchange = Exchange(
        request_id=new_request_id(),
        scope=scope,
        model=API_MODEL,
        messages=to_exchange_messages(messages),
        reply="",
        started_at=now,
        completed_at=now,
        extraction_mode=None,
        metadata=metadata,
    )
    try:
        job_id = await services.queue.enqueue(exchange)
    except QueueError as exc:
        raise GatewayError(503, "the queue is unavailable", type="server_error", code="queue_unavailable") from exc
    return job_id, exchange.request_id


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts = [content_text(m.get("content")).strip() for m in messages if m.get("role") == "user"]
    texts = [text for text in texts if text]
    if not texts:
        raise bad_request("`messages` holds no user message with text", param="messages")
    return texts


async def create_memories(request: Request) -> JSONResponse:
    services = services_of(request)
    body = await read_body(request)
    scope, metadata = read_scope(request, body), read_metadata(body)
    if ("facts" in body) == ("messages" in body):
        raise bad_request("send either `facts` or `messages`", param="facts")
    if "facts" in body:
        facts = read_facts(body)
    else:
        messages = read_messages(body)
        infer = body.get("infer", True)
        if not isinstance(infer, bool):
            raise bad_request("`infer` must be a boolean", param="infer")
        if infer:
            return await enqueue_messages(services, scope, messages, metadata)
        facts = user_texts(messages)
    memories = await store_facts(services, scope, facts, metadata)
    access = access_of(request)
    return JSONResponse(list_json([memory_json(m, access) for m in memories]), status_code=201)


def successor(old: Memory, text: str, request_id: str, now: datetime) -> Memory:
    return old.model_copy(
        update={
            "id": derived_id(request_id, "memory"),
            "text": text,
            "created_at": now,
            "invalid_at": None,
            "superseded_by": None,
            "supersedes": old.id,
            "version": old.version + 1,
            "source_request_id": request_id,
            "actor": "api",
        }
    )


async def correct_memory(request: Request) -> JSONResponse:
    services = services_of(request)
    body = await read_body(request)
    text = (body_text(body, "text", required=True) or "").strip()
    reason = body_text(body, "reason", required=False)
    access = access_of(request)
    old = await load_memory(services, request.path_params["memory_id"], access)
    if not old.is_valid:
        raise GatewayError(409, "this memory was already invalidated; correct its latest version", code="invalidated")
    new = await apply_correction(services, old, text, reason)
    return JSONResponse(memory_json(new, access))


async def apply_correction(services: Services, old: Memory, text: str, reason: str | None) -> Memory:
    new = successor(old, text, new_request_id(), utcnow())
    event = api_event(new, "UPDATE", old, reason, f"{new.id}:update")
    async with map_core_errors():
        (vector,) = await services.core.embedder.embed([text])
        await services.core.store.upsert([new], [vector])
        await services.core.store.invalidate(old.id, new.created_at, new.id)
        await services.core.store.add_events([event])
    return new


async def invalidate_memory(services: Services, memory: Memory, reason: str) -> None:
    event = api_event(memory, "DELETE", memory, reason, f"{memory.id}:delete:{new_request_id()}")
    async with map_core_errors():
        await services.core.store.invalidate(memory.id, event.created_at, None)
        await services.core.store.add_events([event])


async def delete_memory(request: Request) -> JSONResponse:
    services = services_of(request)
    hard = parse_bool(request.query_params.get("hard"), "hard")
    memory = await load_memory(services, request.path_params["memory_id"], access_of(request))
    if hard:
        chain = await version_chain(services, memory)
        erased = api_event(memory, "ERASE", None, f"erased {len(chain)} versions via the API", f"{memory.id}:erase")
        async with map_core_errors():
            await services.core.store.delete_memories([m.id for m in chain])
            await services.core.store.add_events([erased])
        return JSONResponse({"id": memory.id, "object": "memory.deleted", "hard": True, "deleted": len(chain)})
    if not memory.is_valid:
        raise GatewayError(409, "this memory was already invalidated", code="invalidated")
    await invalidate_memory(services, memory, "deleted via the API")
    return JSONResponse({"id": memory.id, "object": "memory.deleted", "hard": False, "deleted": 1})
