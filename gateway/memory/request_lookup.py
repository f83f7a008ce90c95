"""Looking up a request id from the gateway's response headers: which memories were injected into
that request, and which memories it created.

The injected ids are noted in Redis (a hash per request, expiring after REQUEST_TTL_S): by the
exchange's enqueue when memory is on, after the response otherwise, best-effort: a missing lookup
record is never worth a slower or failed chat. What a request created is read from the user's
events (their ``source_request_id``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import cast

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.errors import GatewayError
from gateway.identity import ID_PATTERN, MemoryContext
from gateway.memory.params import services_of, user_id_of
from gateway.memory.views import memory_json
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.models import Memory, ScoredMemory
from mnemo.queue import SideNote
from mnemo.user_order import epoch_ms

logger = logging.getLogger(__name__)

REQUEST_KEY = "mnemo:request:{request_id}"
REQUEST_PATTERN = "mnemo:request:*"
REQUEST_TTL_S = 7 * 24 * 3600
CREATING_ACTIONS = ("ADD", "UPDATE")


def request_side_note(request_id: str, user_id: str, memory_ids: Sequence[str]) -> SideNote:
    """The lookup record of a request, as a hash with its expiry: written by the enqueue's script
    or by note_request, the same fields either way."""
    fields = {"user_id": user_id, "injected": ",".join(memory_ids)}
    return SideNote(REQUEST_KEY.format(request_id=request_id), fields, REQUEST_TTL_S)


async def note_request(
    services: Services, request_id: str, user_id: str, memory_ids: Sequence[str], started_ms: int
) -> None:
    """Record which memories a request was given, unless its user was erased after the request
    started; never raises (run after the response)."""
    note = request_side_note(request_id, user_id, memory_ids)
    try:
        async with asyncio.timeout(services.settings.redis.enqueue_timeout_s):
            await services.queue.note(user_id, started_ms, note)
    except (QueueError, RedisError, OSError, TimeoutError) as exc:
        logger.warning("request %s not recorded for lookups: %s", request_id, type(exc).__name__)


async def drop_request_notes(redis: ArqRedis, user_id: str) -> int:
    dropped = 0
    async for key in redis.scan_iter(match=REQUEST_PATTERN):
        owner = await cast(Awaitable[bytes | None], redis.hget(key, "user_id"))
        if owner is not None and owner.decode() == user_id:
            await redis.delete(key)
            dropped += 1
    return dropped


async def read_note(services: Services, request_id: str) -> dict[str, str]:
    try:
        redis = await services.queue.pool()
        raw = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(REQUEST_KEY.format(request_id=request_id)))
    except (QueueError, RedisError, OSError) as exc:
        raise GatewayError(503, "redis is unavailable", type="server_error", code="queue_unavailable") from exc
    return {name.decode(): value.decode() for name, value in raw.items()}


def request_not_found(request_id: str) -> GatewayError:
    return GatewayError(404, f"no record of request {request_id!r}", param="request_id", code="request_not_found")


async def load_memories(services: Services, memory_ids: Sequence[str]) -> list[Memory]:
    found: list[Memory] = []
    for memory_id in dict.fromkeys(memory_ids):
        if (memory := await services.core.store.get(memory_id)) is not None:
            found.append(memory)
    return found


async def created_ids(services: Services, user_id: str, request_id: str) -> list[str]:
    events = await services.core.store.list_events(user_id)
    return [e.memory_id for e in events if e.source_request_id == request_id and e.action in CREATING_ACTIONS]


async def lookup_request(request: Request) -> JSONResponse:
    """GET /v1/requests/{request_id}; ``?user_id=`` finds what it created once the note expired."""
    services, access = services_of(request), access_of(request)
    request_id = request.path_params["request_id"]
    if not ID_PATTERN.fullmatch(request_id):
        raise request_not_found(request_id)
    note = await read_note(services, request_id)
    user_id = note.get("user_id")
    if user_id is None and "user_id" in request.query_params:
        user_id = user_id_of(request, request.query_params)
    if user_id is None or not access.sees(user_id):
        raise request_not_found(request_id)
    injected = await load_memories(services, [i for i in note.get("injected", "").split(",") if i])
    created = await load_memories(services, await created_ids(services, user_id, request_id))
    if not note and not created:
        raise request_not_found(request_id)
    return JSONResponse(
        {
            "object": "request",
            "id": request_id,
            "user_id": access.public_user(user_id),
            "injected": [memory_json(m, access) for m in injected if m.user_id == user_id],
            "created": [memory_json(m, access) for m in created],
        }
    )


class RequestNote:
    """What a chat was given, for its lookup record. With memory on, the exchange's enqueue
    carries it (``side_note``; no round trip of its own, and the lookup exists as soon as the
    response does); otherwise, or when the exchange went to the outbox, the response's background
    task writes it. Best-effort by design: a BackgroundTask is skipped when a streaming client
    disconnects, and that only loses a lookup."""

    def __init__(self, services: Services, request_id: str, user_id: str, memory_ids: Sequence[str]) -> None:
        self._services = services
        self.request_id = request_id
        self.user_id = user_id
        self.memory_ids = list(memory_ids)
        self.written = False
        self.started_ms = epoch_ms(time.time())  # made as the chat starts: the erasure check's time

    def side_note(self) -> SideNote:
        return request_side_note(self.request_id, self.user_id, self.memory_ids)

    def background(self) -> BackgroundTask:
        return BackgroundTask(self._write_unless_written)

    async def _write_unless_written(self) -> None:
        if not self.written:
            await note_request(self._services, self.request_id, self.user_id, self.memory_ids, self.started_ms)


def request_note(services: Services, context: MemoryContext, memories: Sequence[ScoredMemory]) -> RequestNote | None:
    """The note of a chat whose memory mode reads or writes; None when memory is off."""
    if context.scope is None or not (context.reads or context.writes):
        return None
    return RequestNote(services, context.request_id, context.scope.user_id, [hit.memory.id for hit in memories])
