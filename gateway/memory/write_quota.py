"""The per-user write quota (mnemo.write_quota) on the Memory API: a write over it is a 429
with Retry-After, never a partial write.

The quota lives in the queue's Redis. When Redis does not answer (within the enqueue timeout),
writes go ahead uncounted: the quota guards the store against a runaway client, and must not
take the store's API down with Redis.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from redis.exceptions import RedisError
from starlette.responses import JSONResponse

from gateway.errors import GatewayError
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.models import utcnow
from mnemo.write_quota import WriteQuota, seconds_left

logger = logging.getLogger(__name__)

UNAVAILABLE = (QueueError, RedisError, OSError, TimeoutError)


class RateLimited(GatewayError):
    def __init__(self, per_minute: int, at: datetime) -> None:
        self.retry_after = seconds_left(at)
        super().__init__(
            429,
            f"this user's memory writes are over limits.memories_per_user_per_minute ({per_minute}); "
            f"retry in {self.retry_after} s",
            type="rate_limit_error",
            code="rate_limited",
        )

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return super().response({"Retry-After": str(self.retry_after), **(headers or {})})


async def take_quota(services: Services, user_id: str, count: int) -> None:
    """Count ``count`` new memories of the user, all or none: 429 when they do not all fit."""
    per_minute = services.settings.limits.memories_per_user_per_minute
    if per_minute <= 0 or count <= 0 or services.queue is None:
        return
    now = utcnow()
    try:
        async with asyncio.timeout(services.settings.redis.enqueue_timeout_s):
            quota = WriteQuota(await services.queue.pool(), per_minute)
            granted = await quota.take(user_id, count, now, partial=False)
    except UNAVAILABLE as exc:
        logger.warning("write quota not readable (%s); writing without it", exc)
        return
    if granted < count:
        raise RateLimited(per_minute, now)


async def require_quota_left(services: Services, user_id: str) -> None:
    """429 when the user has nothing left this minute; counts nothing (the worker counts what
    the messages become)."""
    per_minute = services.settings.limits.memories_per_user_per_minute
    if per_minute <= 0 or services.queue is None:
        return
    now = utcnow()
    try:
        async with asyncio.timeout(services.settings.redis.enqueue_timeout_s):
            left = await WriteQuota(await services.queue.pool(), per_minute).left(user_id, now)
    except UNAVAILABLE as exc:
        logger.warning("write quota not readable (%s); enqueueing without it", exc)
        return
    if left == 0:
        raise RateLimited(per_minute, now)
