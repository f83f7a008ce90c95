"""A user's audit feed, export and erasure. Erasure also clears what Redis still holds about the
user: failed-job records and exchanges still waiting in the queue (which would otherwise write
memories back after the erasure)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import DeserializationError, deserialize_job, deserialize_result
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.errors import GatewayError
from gateway.memory_params import (
    event_json,
    list_json,
    map_core_errors,
    memory_json,
    parse_page,
    services_of,
    user_id_of,
)
from gateway.request_log import drop_request_notes
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.models import Memory, Scope, utcnow
from mnemo.queue import (
    APPLIED_AT_KEY,
    APPLIED_SEQUENCE_KEY,
    JOB_NAME,
    SEQUENCE_JOBS_KEY,
    SEQUENCE_KEY,
    SEQUENCE_SCORE_KEY,
    load_job_record,
)

logger = logging.getLogger(__name__)

# The worker's failed-job records (workers.jobs.FAILED_KEY); the gateway may not import workers.
FAILED_PATTERN = "mnemo:failed:*"
EXPORT_PAGE = 500


async def list_user_events(request: Request) -> JSONResponse:
    """The user's events, newest first."""
    services, access = services_of(request), access_of(request)
    user_id = user_id_of(request, request.query_params)
    limit, offset = parse_page(request.query_params)
    async with map_core_errors():
        events = await services.core.store.list_events(user_id)
    page = list(reversed(events))[offset : offset + limit]
    return JSONResponse(list_json([event_json(e, access) for e in page], limit=limit, offset=offset))


async def all_memories(services: Services, user_id: str) -> list[Memory]:
    memories: list[Memory] = []
    async with map_core_errors():
        while True:
            page = await services.core.store.list(
                Scope(user_id=user_id), include_invalidated=True, limit=EXPORT_PAGE, offset=len(memories)
            )
            memories += page
            if len(page) < EXPORT_PAGE:
                return memories


async def export_user(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    user_id = user_id_of(request, request.path_params)
    memories = await all_memories(services, user_id)
    async with map_core_errors():
        events = await services.core.store.list_events(user_id)
    return JSONResponse(
        {
            "object": "user.export",
            "user_id": access.public_user(user_id),
            "exported_at": utcnow().isoformat(),
            "memories": [memory_json(m, access) for m in memories],
            "events": [event_json(e, access) for e in events],
        }
    )


def queued_user(raw: bytes, user_id: str, *, result: bool = False) -> bool:
    """Whether an arq job or job result is an exchange of this user."""
    try:
        job = (
            deserialize_result(raw, deserializer=load_job_record)
            if result
            else deserialize_job(raw, deserializer=load_job_record)
        )
    except DeserializationError:
        return False
    if job.function != JOB_NAME or not job.args or not isinstance(job.args[0], str | bytes):
        return False
    try:
        payload: Any = json.loads(job.args[0])
    except ValueError:
        return False
    scope = payload.get("scope") if isinstance(payload, dict) else None
    return isinstance(scope, dict) and scope.get("user_id") == user_id


async def drop_queued_jobs(redis: ArqRedis, queue_name: str, user_id: str) -> int:
    dropped = 0
    for raw_id in await redis.zrange(queue_name, 0, -1):
        job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        raw = await redis.get(job_key_prefix + job_id)
        if raw and queued_user(raw, user_id):
            await redis.zrem(queue_name, job_id)
            await redis.delete(job_key_prefix + job_id, retry_key_prefix + job_id)
            dropped += 1
    return dropped


async def drop_job_results(redis: ArqRedis, user_id: str) -> int:
    """arq keeps a finished job (its exchange included) as a result for a while."""
    dropped = 0
    async for key in redis.scan_iter(match=result_key_prefix + "*"):
        raw = await redis.get(key)
        if raw and queued_user(raw, user_id, result=True):
            await redis.delete(key)
            dropped += 1
    return dropped


async def drop_failed_jobs(redis: ArqRedis, user_id: str) -> int:
    dropped = 0
    async for key in redis.scan_iter(match=FAILED_PATTERN):
        # redis-py types hget for both its sync and async clients.
        owner = await cast(Awaitable[bytes | None], redis.hget(key, "user_id"))
        if owner is not None and owner.decode() == user_id:
            await redis.delete(key)
            dropped += 1
    return dropped


async def rewrite_append_only_file(redis: ArqRedis) -> None:
    """A Redis logging its writes to an append-only file (the embedded one does) keeps the
    erased exchanges' original writes there until it rewrites the file: start that now."""
    try:
        config = await redis.config_get("appendonly")
        if set(config.values()) & {"yes", b"yes"}:
            await redis.bgrewriteaof()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    except RedisError as exc:  # a managed Redis may refuse CONFIG or BGREWRITEAOF
        logger.warning("could not rewrite redis's append-only file after an erasure: %s", exc)


async def purge_redis(services: Services, user_id: str) -> tuple[int, int]:
    try:
        redis = await services.queue.pool()
        queued = await drop_queued_jobs(redis, services.settings.redis.queue_name, user_id)
        queued += services.recorder.outbox.delete_user(user_id)
        failed = await drop_failed_jobs(redis, user_id)
        await drop_job_results(redis, user_id)
        await drop_request_notes(redis, user_id)
        keys = (SEQUENCE_KEY, APPLIED_SEQUENCE_KEY, APPLIED_AT_KEY, SEQUENCE_JOBS_KEY, SEQUENCE_SCORE_KEY)
        await redis.delete(*(key.format(user_id=user_id) for key in keys))
        await rewrite_append_only_file(redis)
    except (QueueError, RedisError, OSError) as exc:
        raise GatewayError(
            503, "redis is unavailable; nothing was erased, retry later", type="server_error", code="queue_unavailable"
        ) from exc
    return queued, failed


async def erase_user(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    user_id = user_id_of(request, request.path_params)
    # Queued exchanges first, so no job writes the user's memories back after the store is cleared.
    queued, failed = await purge_redis(services, user_id)
    async with map_core_errors():
        memories, events = await services.core.store.delete_user(user_id)
    logger.info("erased user: %d memories, %d events, %d queued and %d failed jobs", memories, events, queued, failed)
    return JSONResponse(
        {
            "object": "user.erased",
            "user_id": access.public_user(user_id),
            "memories": memories,
            "events": events,
            "queued_jobs": queued,
            "failed_jobs": failed,
        }
    )
