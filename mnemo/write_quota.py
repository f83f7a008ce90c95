"""A per-user ceiling on memories written per minute, counted in Redis so that every gateway
replica and every worker share one count.

Fixed one-minute windows: one small hash per user and minute (``QUOTA_KEY``), its count in
field ``n``. A take is one script call (atomic, one round trip) that grants what is left of the
window, all or part of what was asked. A take named by a request id is remembered in the hash,
so a retried or redelivered job is granted what its first try was, without counting twice.

Which minute a write counts in is the caller's: the worker uses the minute the exchange
completed (the gateway's clock), not the minute it runs, so a backlog applied after an outage
is counted as the user sent it, and does not lose memories to a burst the user never made.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

# Per-user data, named by the SHA-1 of the user id (as mnemo.user_order names an erasure) so no
# user id is kept in clear: the fields are the count "n" and "r:<request id>" per take. Windows
# expire by themselves within QUOTA_TTL_S; an erasure deletes them at once (forget_user).
QUOTA_KEY = "mnemo:quota:{user_hash}:{minute}"
WINDOW_S = 60
# Long enough for a window's writes (a user's backlog for one minute is applied within
# seconds), short enough that idle users' windows do not pile up in Redis.
QUOTA_TTL_S = 600

# KEYS[1] the window; ARGV: limit, wanted, ttl, partial ("1": grant what is left; "0": all or
# nothing), request id ("" for none). Returns the number granted.
TAKE_SCRIPT = """
local wanted = tonumber(ARGV[2])
local field = ARGV[5] ~= '' and ('r:' .. ARGV[5]) or nil
if field then
  local before = redis.call('HGET', KEYS[1], field)
  if before then return math.min(tonumber(before), wanted) end
end
local left = tonumber(ARGV[1]) - tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local granted = math.max(0, math.min(left, wanted))
if granted < wanted and ARGV[4] == '0' then granted = 0 end
if granted > 0 then redis.call('HINCRBY', KEYS[1], 'n', granted) end
if field then redis.call('HSET', KEYS[1], field, granted) end
if granted > 0 or field then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return granted
"""


def user_hash(user_id: str) -> str:
    return hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()


def quota_key(user_id: str, at: datetime) -> str:
    return QUOTA_KEY.format(user_hash=user_hash(user_id), minute=window_of(at))


async def forget_user(redis: Any, user_id: str) -> int:
    """Delete every quota window of the user (an erasure); returns how many there were."""
    keys = [key async for key in redis.scan_iter(match=QUOTA_KEY.format(user_hash=user_hash(user_id), minute="*"))]
    return int(await redis.delete(*keys)) if keys else 0


def window_of(at: datetime) -> int:
    """The window (minutes since the epoch) a write at ``at`` counts in."""
    return int(at.timestamp()) // WINDOW_S


def seconds_left(at: datetime) -> int:
    """Whole seconds from ``at`` to the end of its window (at least 1): a 429's Retry-After."""
    return max(1, WINDOW_S - int(at.timestamp()) % WINDOW_S)


class WriteQuota:
    """``per_minute`` memories per user per window; ``redis`` is a redis-py asyncio client (an
    arq pool is one). A ``per_minute`` of 0 means no limit: nothing is read or written."""

    def __init__(self, redis: Any, per_minute: int) -> None:
        self.redis = redis
        self.per_minute = per_minute

    async def take(
        self, user_id: str, wanted: int, at: datetime, *, partial: bool = True, request_id: str | None = None
    ) -> int:
        """How many of ``wanted`` writes the user may make now (counted as made)."""
        if self.per_minute <= 0 or wanted <= 0:
            return max(0, wanted)
        key = quota_key(user_id, at)
        args = (self.per_minute, wanted, QUOTA_TTL_S, "1" if partial else "0", request_id or "")
        return int(await self.redis.eval(TAKE_SCRIPT, 1, key, *args))

    async def left(self, user_id: str, at: datetime) -> int | None:
        """What is left of the user's window (None: no limit), counting nothing."""
        if self.per_minute <= 0:
            return None
        used = await self.redis.hget(quota_key(user_id, at), "n")
        return max(0, self.per_minute - int(used or 0))
