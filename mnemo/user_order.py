"""Per-user order with one mechanism: a list of pending exchanges and a claim per user.

The rule: one user's exchanges are applied one at a time, in the order Redis accepted them,
while different users are applied in parallel. How:

* The gateway's enqueue appends the exchange to the user's list (``{prefix}:pending:{user}``).
  If the user has no claim, the same script sets one (``s:<job id>``, "scheduled") and queues an
  arq ``drain_user`` job for the user: one Redis round trip, atomic.
* The drain job turns the claim into ``r:<job id>`` ("running"), applies the list's head,
  pops it, and goes on until the list is empty; then it deletes the claim in the same script
  that sees the list empty, so an exchange appended meanwhile always finds either a running
  drain or no claim (and schedules one). At most one drain per user runs at any time: a job
  whose id is not the claim's exits at once (a stale or duplicate job costs one round trip).
* A running claim is a lease of ``LEASE_MS``, renewed by the job's heartbeat. A killed worker
  stops renewing: within seconds the lease lapses and any worker's sweep (every ``SWEEP_S``,
  driven by the ``{prefix}:claims`` index of claim expiry times) schedules a new drain for a
  user whose list is not empty. Nothing waits for arq's in-progress key of the dead job (that
  job, re-run later by arq, finds the claim is not its own and exits).
* Nothing about ordering waits in a worker slot: a drain job only exists for a user it owns.

Erasure is final: ``erase`` stamps the user's erasure time (``{prefix}:erased:<sha1 of the user
id>``, kept for good and holding no user id in clear), empties the list and the dedup set, and
reports whether a drain is writing right now. Every write path checks the stamp atomically: the
enqueue drops an exchange that started before it (an outbox delivered late, a stream that ended
after it), and a drain takes the user's ``writing`` marker (a short lease) before each
exchange's store writes only if the exchange started after the stamp. The erasure waits for a
marker taken before it to be released (the writes it covers take milliseconds) before it
deletes the store's data, so no write of an earlier exchange can land after it returns.

Keys are plain Redis keys built inside the scripts (one Redis, as arq itself needs), each under
the deployment's queue name as prefix, so deployments and test runs sharing a Redis stay apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

DRAIN_JOB = "drain_user"
LEASE_MS = 10_000  # a running claim and a writing marker outlive their holder by this much at most
HEARTBEAT_S = LEASE_MS / 1000 / 4
SWEEP_S = 1.0
SWEEP_BATCH = 200
# A scheduled claim lives as long as its job's record (ARQ_JOB_TTL_MS), however deep the queue:
# replacing it while its job still waits would send the user to the back of the queue again.
# Every SCHEDULED_CHECK_MS a sweep looks whether the job still exists, and schedules another
# only if it does not (a record deleted, or expired unstarted).
SCHEDULED_CHECK_MS = 10 * 60_000
SEEN_TTL_MS = 30 * 24 * 3600_000  # how long a request id is remembered for de-duplication
ARQ_JOB_TTL_MS = 24 * 3600_000  # arq's own expires_extra_ms: an unstarted job record's lifetime
ERASE_WAIT_S = (LEASE_MS / 1000) * 2

# Shared by every script. `drain_record` is the only place arq's job record format is written
# by hand (JSON, read back by mnemo.queue.load_job_record): tests/unit/test_user_order.py
# checks it against arq's own reader.
PRELUDE = """
local function key(p, kind, u) return p .. ':' .. kind .. ':' .. u end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function erased_at(p, u)
  return tonumber(redis.call('GET', p .. ':erased:' .. redis.sha1hex(u)) or '-1')
end
local function drain_record(u, at)
  return '{"t":null,"f":"drain_user","a":[' .. cjson.encode(u) .. '],"k":{},"et":' .. string.format('%d', at) .. '}'
end
local function schedule(p, q, u, now, delay, check, job_ttl)
  -- arq's keys are not kept apart by queue: the job id names the queue, or two deployments (or
  -- test runs) sharing a Redis database would overwrite each other's job records.
  local jid = 'mnemo:drain:' .. p .. ':' .. redis.call('INCR', p .. ':drain-seq')
  local at = now + delay
  redis.call('SET', key(p, 'claim', u), 's:' .. jid, 'PX', job_ttl + delay)
  redis.call('ZADD', p .. ':claims', at + check, u)
  redis.call('SET', 'arq:job:' .. jid, drain_record(u, at), 'PX', job_ttl + delay)
  redis.call('ZADD', q, at, jid)
  return jid
end
local function release_writing(p, u, jid)
  if redis.call('GET', key(p, 'writing', u)) == jid then redis.call('DEL', key(p, 'writing', u)) end
end
"""

# ARGV: prefix, queue, user, request id, payload, started (ms), seen ttl, scheduled check, job ttl,
# then optionally a side note: its key, its ttl (s), its field/value pairs.
# Returns 1 (queued), 0 (a duplicate of a request id already queued or applied), -1 (the
# exchange started before the user's erasure: dropped, and its note with it).
ENQUEUE_SCRIPT = (
    PRELUDE
    + """
local p, q, u, rid, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if tonumber(ARGV[6]) <= erased_at(p, u) then return -1 end
if #ARGV > 9 then
  redis.call('HSET', ARGV[10], unpack(ARGV, 12))
  redis.call('EXPIRE', ARGV[10], ARGV[11])
end
local now = now_ms()
local seen = key(p, 'seen', u)
if redis.call('ZSCORE', seen, rid) then return 0 end
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - tonumber(ARGV[7]))
redis.call('ZADD', seen, now, rid)
redis.call('PEXPIRE', seen, ARGV[7])
redis.call('RPUSH', key(p, 'pending', u), payload)
redis.call('INCR', p .. ':pending-total')
if redis.call('EXISTS', key(p, 'claim', u)) == 0 then
  schedule(p, q, u, now, 0, tonumber(ARGV[8]), tonumber(ARGV[9]))
end
return 1
"""
)

# One step of a drain. ARGV: prefix, user, job id, lease, the entry just done ('' for none),
# start ('1': the job's first step, taking the claim from scheduled to running).
# Returns {-1} (the claim is not this job's: stop), {1, head} (apply head next) or {0} (the list
# is empty: the claim is released in this same script).
STEP_SCRIPT = (
    PRELUDE
    + """
local p, u, jid, lease, done = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local claim_key, pending = key(p, 'claim', u), key(p, 'pending', u)
local claim = redis.call('GET', claim_key)
if ARGV[6] == '1' and claim == 's:' .. jid then claim = 'r:' .. jid end
if claim ~= 'r:' .. jid then return {-1} end
if done ~= '' and redis.call('LINDEX', pending, 0) == done then
  redis.call('LPOP', pending)
  redis.call('DECR', p .. ':pending-total')
end
release_writing(p, u, jid)
local head = redis.call('LINDEX', pending, 0)
if head then
  redis.call('SET', claim_key, claim, 'PX', lease)
  redis.call('ZADD', p .. ':claims', now_ms() + lease, u)
  return {1, head}
end
redis.call('DEL', claim_key)
redis.call('ZREM', p .. ':claims', u)
return {0}
"""
)

# Before an exchange's first store write. ARGV: prefix, user, job id, lease, exchange started (ms).
# Returns 1 (write: the writing marker is taken), 0 (the claim is lost), -1 (erased since).
FENCE_SCRIPT = (
    PRELUDE
    + """
local p, u, jid = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', key(p, 'claim', u)) ~= 'r:' .. jid then return 0 end
if tonumber(ARGV[5]) <= erased_at(p, u) then return -1 end
redis.call('SET', key(p, 'writing', u), jid, 'PX', ARGV[4])
return 1
"""
)

# ARGV: prefix, user, job id, lease. Renews the running claim and the writing marker; 0 if lost.
HEARTBEAT_SCRIPT = (
    PRELUDE
    + """
local p, u, jid, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claim_key = key(p, 'claim', u)
if redis.call('GET', claim_key) ~= 'r:' .. jid then return 0 end
redis.call('PEXPIRE', claim_key, lease)
redis.call('ZADD', p .. ':claims', now_ms() + tonumber(lease), u)
if redis.call('GET', key(p, 'writing', u)) == jid then redis.call('PEXPIRE', key(p, 'writing', u), lease) end
return 1
"""
)

# Give the user to a new drain job (the list's head stays first). ARGV: prefix, queue, user, job
# id, delay (ms), scheduled check, job ttl. Returns 1, or 0 if the claim was not this job's.
HANDOFF_SCRIPT = (
    PRELUDE
    + """
local p, q, u, jid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', key(p, 'claim', u)) ~= 'r:' .. jid then return 0 end
release_writing(p, u, jid)
schedule(p, q, u, now_ms(), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
return 1
"""
)

# Users whose claim is due for a look: re-index a live claim (a running lease, or a scheduled
# claim whose job still exists); schedule a drain for a lapsed or lost one with work left; forget
# one with none. ARGV: prefix, queue, scheduled check interval, job ttl, batch. Returns how many
# drains it scheduled.
SWEEP_SCRIPT = (
    PRELUDE
    + """
local p, q = ARGV[1], ARGV[2]
local now = now_ms()
local scheduled = 0
local check = tonumber(ARGV[3])
for _, u in ipairs(redis.call('ZRANGEBYSCORE', p .. ':claims', '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))) do
  local claim = redis.call('GET', key(p, 'claim', u))
  local ttl = redis.call('PTTL', key(p, 'claim', u))
  local queued = claim and string.sub(claim, 1, 2) == 's:'
  local lost = queued and redis.call('EXISTS', 'arq:job:' .. string.sub(claim, 3)) == 0
  if ttl > 0 and not lost then
    redis.call('ZADD', p .. ':claims', now + math.min(ttl, check), u)
  elseif redis.call('LLEN', key(p, 'pending', u)) > 0 then
    schedule(p, q, u, now, 0, tonumber(ARGV[3]), tonumber(ARGV[4]))
    scheduled = scheduled + 1
  else
    redis.call('DEL', key(p, 'claim', u))
    redis.call('ZREM', p .. ':claims', u)
  end
end
return scheduled
"""
)

# ARGV: prefix, queue, user. Stamps the erasure, drops what is pending, the dedup and failure
# records, and a drain that is only scheduled (its job record names the user; a running drain
# finds the list empty and releases the claim itself); returns the writing marker's remaining ms
# (<= 0: none).
ERASE_SCRIPT = (
    PRELUDE
    + """
local p, q, u = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local stamp = p .. ':erased:' .. redis.sha1hex(u)
if now > tonumber(redis.call('GET', stamp) or '-1') then redis.call('SET', stamp, now) end
redis.call('DECRBY', p .. ':pending-total', redis.call('LLEN', key(p, 'pending', u)))
redis.call('DEL', key(p, 'pending', u), key(p, 'seen', u), key(p, 'failures', u))
local claim = redis.call('GET', key(p, 'claim', u))
if claim and string.sub(claim, 1, 2) == 's:' then
  local jid = string.sub(claim, 3)
  redis.call('DEL', 'arq:job:' .. jid, key(p, 'claim', u))
  redis.call('ZREM', q, jid)
  redis.call('ZREM', p .. ':claims', u)
end
return redis.call('PTTL', key(p, 'writing', u))
"""
)

# A side note (a small hash with a ttl) of an exchange, unless the user was erased after the
# exchange started. ARGV: prefix, user, started (ms), key, ttl (s), field/value pairs.
NOTE_SCRIPT = (
    PRELUDE
    + """
if tonumber(ARGV[3]) <= erased_at(ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', ARGV[4], unpack(ARGV, 6))
redis.call('EXPIRE', ARGV[4], ARGV[5])
return 1
"""
)


# Count a transient failure of an exchange, unless its user was erased since it started (-1).
# ARGV: prefix, user, request id, started (ms).
FAILURE_SCRIPT = (
    PRELUDE
    + """
if tonumber(ARGV[4]) <= erased_at(ARGV[1], ARGV[2]) then return -1 end
return redis.call('HINCRBY', key(ARGV[1], 'failures', ARGV[2]), ARGV[3], 1)
"""
)


def user_key(prefix: str, kind: str, user_id: str) -> str:
    """The name a script gives a user's key (``key`` in PRELUDE), for tests and tools."""
    return f"{prefix}:{kind}:{user_id}"


def epoch_ms(seconds: float) -> int:
    return int(seconds * 1000)


async def run_script(redis: Any, script: str, *args: Any) -> Any:
    # redis-py types eval for its sync and async clients alike.
    return await cast(Awaitable[Any], redis.eval(script, 0, *args))


@dataclass(frozen=True)
class UserOrder:
    """The scripts above, bound to one deployment's arq queue, whose name prefixes every key."""

    queue_name: str

    @property
    def prefix(self) -> str:
        return self.queue_name

    async def enqueue(
        self,
        redis: Any,
        user_id: str,
        request_id: str,
        payload: str,
        started_ms: int,
        note: tuple[str, int, Sequence[str]] | None = None,
    ) -> int:
        args: list[Any] = [self.prefix, self.queue_name, user_id, request_id, payload, started_ms]
        args += [SEEN_TTL_MS, SCHEDULED_CHECK_MS, ARQ_JOB_TTL_MS]
        if note is not None:
            note_key, ttl_s, fields = note
            args += [note_key, ttl_s, *fields]
        return int(await run_script(redis, ENQUEUE_SCRIPT, *args))

    async def step(self, redis: Any, user_id: str, job_id: str, done: str = "", *, start: bool = False) -> Step:
        reply = await run_script(
            redis, STEP_SCRIPT, self.prefix, user_id, job_id, LEASE_MS, done, "1" if start else "0"
        )
        status = int(reply[0])
        head = reply[1] if status == 1 else None
        return Step(owned=status >= 0, head=head.decode() if isinstance(head, bytes) else head)

    async def fence(self, redis: Any, user_id: str, job_id: str, started_ms: int) -> int:
        return int(await run_script(redis, FENCE_SCRIPT, self.prefix, user_id, job_id, LEASE_MS, started_ms))

    async def heartbeat(self, redis: Any, user_id: str, job_id: str) -> bool:
        return bool(await run_script(redis, HEARTBEAT_SCRIPT, self.prefix, user_id, job_id, LEASE_MS))

    async def hand_off(self, redis: Any, user_id: str, job_id: str, delay_s: float = 0.0) -> bool:
        args = [self.prefix, self.queue_name, user_id, job_id, epoch_ms(delay_s), SCHEDULED_CHECK_MS, ARQ_JOB_TTL_MS]
        return bool(await run_script(redis, HANDOFF_SCRIPT, *args))

    async def sweep(self, redis: Any) -> int:
        args = [self.prefix, self.queue_name, SCHEDULED_CHECK_MS, ARQ_JOB_TTL_MS, SWEEP_BATCH]
        return int(await run_script(redis, SWEEP_SCRIPT, *args))

    async def erase(self, redis: Any, user_id: str, wait_s: float = ERASE_WAIT_S) -> bool:
        """Stamp the erasure and drop what is pending; then wait (up to ``wait_s``) for a drain
        writing an earlier exchange right now to finish. False if it is still writing."""
        writing_ms = int(await run_script(redis, ERASE_SCRIPT, self.prefix, self.queue_name, user_id))
        deadline = time.monotonic() + wait_s
        while writing_ms > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
            writing_ms = int(await redis.pttl(user_key(self.prefix, "writing", user_id)))
        return True

    async def note(
        self, redis: Any, user_id: str, started_ms: int, key: str, ttl_s: int, fields: Sequence[str]
    ) -> bool:
        return bool(await run_script(redis, NOTE_SCRIPT, self.prefix, user_id, started_ms, key, ttl_s, *fields))

    async def add_failure(self, redis: Any, user_id: str, request_id: str, started_ms: int) -> int:
        """Count a transient failure of an exchange: how many so far, or -1 if its user was
        erased after it started (the erasure drops the counts)."""
        return int(await run_script(redis, FAILURE_SCRIPT, self.prefix, user_id, request_id, started_ms))

    async def pending_total(self, redis: Any) -> int:
        """Exchanges waiting in every user's list: the queue's depth in exchanges."""
        return max(0, int(await redis.get(self.prefix + ":pending-total") or 0))

    async def pending_count(self, redis: Any, user_id: str) -> int:
        return int(await redis.llen(user_key(self.prefix, "pending", user_id)))

    async def drained(self, redis: Any, user_id: str) -> bool:
        """Nothing pending and no drain claimed for the user (tests and tools)."""
        pending = user_key(self.prefix, "pending", user_id)
        claim = user_key(self.prefix, "claim", user_id)
        return int(await redis.llen(pending)) == 0 and not await redis.exists(claim)


@dataclass(frozen=True)
class Step:
    owned: bool  # False: the claim is not this job's (stale, or lost): stop at once
    head: str | None  # the next exchange's payload; None with owned: the list is empty, claim released
