"""A user's audit feed, export and erasure. Erasure is final: it first stamps the user's erasure
in Redis, which every later write of an earlier exchange checks (mnemo.user_order), drops the
user's pending exchanges and waits for a drain writing one right now; then it clears what Redis
and the outbox still hold about the user, and last the store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import cast

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import access_of
from gateway.errors import GatewayError
from gateway.memory.params import parse_page, services_of, user_id_of
from gateway.memory.request_lookup import drop_request_notes
from gateway.memory.views import event_json, list_json, memory_json
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.models import Memory, Scope, utcnow
from mnemo.write_quota import forget_user

logger = logging.getLogger(__name__)

# The worker's failed-job records (workers.jobs.FAILED_KEY); the gateway may not import workers.
FAILED_PATTERN = "mnemo:failed:*"
EXPORT_PAGE = 500


async def list_user_events(request: Request) -> JSONResponse:
    """The user's events, newest first."""
    services, access = services_of(request), access_of(request)
    user_id = user_id_of(request, request.query_params)
    limit, offset = parse_page(request.query_params)
    events = await services.core.store.list_events(user_id)
    page = list(reversed(events))[offset : offset + limit]
    return JSONResponse(list_json([event_json(e, access) for e in page], limit=limit, offset=offset))


async def all_memories(services: Services, user_id: str) -> list[Memory]:
    memories: list[Memory] = []
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
        queued = await services.queue.order.pending_count(redis, user_id)
        if not await services.queue.erase(user_id):
            raise GatewayError(
                503,
                "a worker is still writing this user's memory; the erasure is under way and no earlier exchange "
                "will be stored again, but retry to delete the stored memories",
                type="server_error",
                code="erasure_busy",
            )
        queued += services.recorder.outbox.delete_user(user_id)
        failed = await drop_failed_jobs(redis, user_id)
        await drop_request_notes(redis, user_id)
        await forget_user(redis, user_id)  # the user's write-quota windows
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
