"""Changing memory over REST: add facts (or messages, verbatim or through the worker), correct a
memory (a new version, the old one invalidated), and delete one (invalidate, or erase its chain).
Every change is an event with actor "api"; ids derive from a fresh request id. Writes are
bounded by the ``limits`` settings: items per write, characters per memory (400 above them),
and memories per user per minute (429, see gateway.memory.write_quota). New memories expire as
the ``retention`` policy says, or at an earlier ``expires_at`` the request asks (mnemo.retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.errors import GatewayError, bad_request
from gateway.identity import new_request_id
from gateway.memory.params import (
    body_text,
    load_memory,
    optional_id,
    parse_bool,
    parse_time,
    read_body,
    services_of,
    user_id_of,
)
from gateway.memory.reads import version_chain
from gateway.memory.views import list_json, memory_json
from gateway.memory.write_quota import require_quota_left, take_quota
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.memory_line import count_lines
from mnemo.messages import content_text, to_exchange_messages
from mnemo.models import Action, Memory, MemoryEvent, Scope, derived_id, utcnow
from mnemo.queue import Exchange, exchange_job_id
from mnemo.retention import RetentionPolicy

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


def read_expiry(body: dict[str, Any], field: str = "expires_at") -> datetime | None:
    """An expiry the request asks for: an ISO-8601 time in the future (a date alone is its midnight UTC)."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"`{field}` must be an ISO-8601 timestamp", param=field)
    moment = parse_time(value, field)
    if moment is not None and moment <= utcnow():
        raise bad_request(f"`{field}` must be in the future", param=field)
    return moment


def expiry_of(services: Services, scope: Scope, metadata: dict[str, Any], at: datetime, asked: datetime | None) -> Any:
    return RetentionPolicy(services.settings.retention).expires_at(scope, metadata, at, asked)


def check_length(text: str, max_chars: int, param: str) -> str:
    if len(text) > max_chars:
        raise bad_request(
            f"{param} is {len(text)} characters; a memory is at most {max_chars} (limits.max_memory_chars)",
            param=param,
            code="memory_too_long",
        )
    return text


def read_facts(body: dict[str, Any], max_chars: int) -> list[str]:
    facts = body.get("facts")
    if not isinstance(facts, list) or not 1 <= len(facts) <= MAX_FACTS:
        raise bad_request(f"`facts` must be an array of 1 to {MAX_FACTS} strings", param="facts")
    for index, fact in enumerate(facts):
        if not isinstance(fact, str) or not fact.strip():
            raise bad_request(f"facts[{index}] must be a non-empty string", param=f"facts[{index}]")
    return [check_length(fact.strip(), max_chars, f"facts[{index}]") for index, fact in enumerate(facts)]


def read_messages(body: dict[str, Any], max_messages: int) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty array", param="messages")
    if len(messages) > max_messages:
        raise bad_request(
            f"`messages` holds {len(messages)} messages; at most {max_messages} per write "
            "(limits.max_messages_per_write): send them in several writes",
            param="messages",
            code="too_many_messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a string `role`", param=f"messages[{index}]")
        if not isinstance(message.get("content"), str | list | None):
            raise bad_request(f"messages[{index}].content must be a string or an array", param=f"messages[{index}]")
    return messages


async def store_facts(
    services: Services, scope: Scope, facts: list[str], metadata: dict[str, Any], expires_at: datetime | None = None
) -> list[Memory]:
    await take_quota(services, scope.user_id, len(facts))
    request_id, now = new_request_id(), utcnow()
    expires = expiry_of(services, scope, metadata, now, expires_at)
    line_tokens = await count_lines(facts)
    memories = [
        Memory(
            id=derived_id(request_id, str(number), "memory"),
            text=fact,
            line_tokens=line_tokens[fact],
            **scope.model_dump(),
            created_at=now,
            source_request_id=request_id,
            actor="api",
            metadata=metadata,
            expires_at=expires,
        )
        for number, fact in enumerate(facts)
    ]
    events = [api_event(m, "ADD", None, "added via the API", f"{m.id}:add") for m in memories]
    vectors = await services.core.embedder.embed(facts)
    await services.core.store.upsert(memories, vectors)
    await services.core.store.add_events(events)
    return memories


async def enqueue_messages(
    services: Services,
    scope: Scope,
    messages: list[dict[str, Any]],
    metadata: dict[str, Any],
    expires_at: datetime | None = None,
) -> JSONResponse:
    job_id, request_id = await enqueue_exchange(services, scope, messages, metadata, expires_at)
    return JSONResponse({"job_id": job_id, "request_id": request_id}, status_code=202)


async def enqueue_exchange(
    services: Services,
    scope: Scope,
    messages: list[dict[str, Any]],
    metadata: dict[str, Any],
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """Send messages to the worker like a chat exchange; returns (job id, request id)."""
    if services.queue is None:
        raise GatewayError(503, "no queue is configured", type="server_error", code="queue_unavailable")
    await require_quota_left(services, scope.user_id)
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
        expires_at=expires_at,
    )
    try:
        await services.queue.enqueue(exchange)
    except QueueError as exc:
        raise GatewayError(503, "the queue is unavailable", type="server_error", code="queue_unavailable") from exc
    return exchange_job_id(exchange.request_id), exchange.request_id


def user_texts(messages: list[dict[str, Any]], max_chars: int) -> list[str]:
    texts = [
        check_length(text, max_chars, f"messages[{index}].content")
        for index, message in enumerate(messages)
        if message.get("role") == "user" and (text := content_text(message.get("content")).strip())
    ]
    if not texts:
        raise bad_request("`messages` holds no user message with text", param="messages")
    return texts


async def create_memories(request: Request) -> JSONResponse:
    services = services_of(request)
    body = await read_body(request)
    scope, metadata = read_scope(request, body), read_metadata(body)
    expires_at = read_expiry(body)
    limits = services.settings.limits
    if ("facts" in body) == ("messages" in body):
        raise bad_request("send either `facts` or `messages`", param="facts")
    if "facts" in body:
        facts = read_facts(body, limits.max_memory_chars)
    else:
        messages = read_messages(body, limits.max_messages_per_write)
        infer = body.get("infer", True)
        if not isinstance(infer, bool):
            raise bad_request("`infer` must be a boolean", param="infer")
        if infer:
            return await enqueue_messages(services, scope, messages, metadata, expires_at)
        facts = user_texts(messages, limits.max_memory_chars)
    memories = await store_facts(services, scope, facts, metadata, expires_at)
    access = access_of(request)
    return JSONResponse(list_json([memory_json(m, access) for m in memories]), status_code=201)


def successor(
    old: Memory, text: str, line_tokens: int | None, request_id: str, now: datetime, expires_at: datetime | None
) -> Memory:
    return old.model_copy(
        update={
            "id": derived_id(request_id, "memory"),
            "text": text,
            "line_tokens": line_tokens,  # the old text's count would otherwise come along
            "created_at": now,
            "invalid_at": None,
            "superseded_by": None,
            "supersedes": old.id,
            "version": old.version + 1,
            "source_request_id": request_id,
            "actor": "api",
            "expires_at": expires_at,
        }
    )


async def correct_memory(request: Request) -> JSONResponse:
    """A new version with ``text``; or, with only ``expires_at`` (null: the policy's), the same
    memory with a new expiry."""
    services = services_of(request)
    body = await read_body(request)
    only_expiry = "text" not in body and "expires_at" in body
    text = None if only_expiry else (body_text(body, "text", required=True) or "").strip()
    reason = body_text(body, "reason", required=False)
    asked = read_expiry(body)
    access = access_of(request)
    old = await load_memory(services, request.path_params["memory_id"], access)
    if not old.is_valid:
        raise GatewayError(409, "this memory was already invalidated; correct its latest version", code="invalidated")
    if text is None:
        expires = expiry_of(services, old.scope, old.metadata, old.created_at, asked)
        await services.core.store.set_expiry(old.id, expires)
        return JSONResponse(memory_json(old.model_copy(update={"expires_at": expires}), access))
    new = await apply_correction(services, old, text, reason, asked if "expires_at" in body else old.expires_at)
    return JSONResponse(memory_json(new, access))


async def apply_correction(
    services: Services, old: Memory, text: str, reason: str | None, expires_at: datetime | None = None
) -> Memory:
    """``expires_at``: the one asked for (the old version's, unless the request says otherwise)."""
    check_length(text, services.settings.limits.max_memory_chars, "text")
    await take_quota(services, old.user_id, 1)  # a new version is a new memory
    line_tokens = (await count_lines([text]))[text]
    now = utcnow()
    expires = expiry_of(services, old.scope, old.metadata, now, expires_at)
    new = successor(old, text, line_tokens, new_request_id(), now, expires)
    event = api_event(new, "UPDATE", old, reason, f"{new.id}:update")
    (vector,) = await services.core.embedder.embed([text])
    await services.core.store.upsert([new], [vector])
    await services.core.store.invalidate(old.id, new.created_at, new.id)
    await services.core.store.add_events([event])
    return new


async def invalidate_memory(services: Services, memory: Memory, reason: str) -> None:
    event = api_event(memory, "DELETE", memory, reason, f"{memory.id}:delete:{new_request_id()}")
    await services.core.store.invalidate(memory.id, event.created_at, None)
    await services.core.store.add_events([event])


async def delete_memory(request: Request) -> JSONResponse:
    services = services_of(request)
    hard = parse_bool(request.query_params.get("hard"), "hard")
    memory = await load_memory(services, request.path_params["memory_id"], access_of(request))
    if hard:
        chain = await version_chain(services, memory)
        erased = api_event(memory, "ERASE", None, f"erased {len(chain)} versions via the API", f"{memory.id}:erase")
        await services.core.store.delete_memories([m.id for m in chain])
        await services.core.store.add_events([erased])
        return JSONResponse({"id": memory.id, "object": "memory.deleted", "hard": True, "deleted": len(chain)})
    if not memory.is_valid:
        raise GatewayError(409, "this memory was already invalidated", code="invalidated")
    await invalidate_memory(services, memory, "deleted via the API")
    return JSONResponse({"id": memory.id, "object": "memory.deleted", "hard": False, "deleted": 1})
