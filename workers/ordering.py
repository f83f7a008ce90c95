"""Per-user order: exchange N of a user is applied only after exchange N-1.

The gateway numbers a user's exchanges as Redis accepts them (mnemo.queue.SEQUENCE_KEY), so
the numbers follow completion order, and queues them in number order. A job waits for its
predecessor before taking the user's lock: in its worker slot while the predecessor is coming
(running, or queued ahead of it), otherwise giving the slot back. Jobs of the same worker
process are woken the moment their predecessor is applied (``TurnSignals``); a predecessor
applied by another worker is seen by polling Redis every ``POLL_S``. A number can be lost (Redis accepted
the increment but not the job, or the job was erased), so the wait is bounded: once the job has
waited ``ORDER_WAIT_S`` and the user's applied number has not moved for as long, it goes ahead
and says so. A long backlog that is still moving is never a reason to break the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from arq import Retry
from arq.constants import in_progress_key_prefix

from mnemo.queue import APPLIED_AT_KEY, APPLIED_SEQUENCE_KEY, SEQUENCE_JOBS_KEY, Exchange

logger = logging.getLogger(__name__)

ORDER_WAIT_S = 30.0
POLL_S = 0.05
LOCAL_POLL_S = 1.0  # the safety poll while the predecessor is held in this process (a wake-up is due)
TURN_POLL_S = 0.5  # waited inside the worker slot before giving it back, when its place is unknown
TURN_HOLD_S = 10.0  # the longest a job waits in its slot for a predecessor that is coming
ORDER_RECHECK_S = 0.25
# Deferrals while waiting for a turn or a user's lock are not failures: arq counts them as
# tries, so the job's max_tries allows this many on top of worker.max_tries.
MAX_DEFERRALS = 1000
# Set applied-seq to max(current, N) atomically, so a replayed old job never moves it back, note
# when it last moved (the caller's clock, seconds), and forget which job carried N; given a
# fourth key, also write the job's applied ledger (ARGV[3]: its TTL), in the same round trip.
ADVANCE_SCRIPT = """
if KEYS[4] then redis.call('SET', KEYS[4], '1', 'EX', ARGV[3]) end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('HDEL', KEYS[3], ARGV[1])
return current
"""
# Is the job carrying number N-1 coming: running now, or queued ahead of the waiting job (arq
# starts a read batch in score order, so a job ahead of one already started is being started)?
# Scores are compared exactly, as stored: arq hands a job its score truncated to the ms.
PREDECESSOR_SCRIPT = """
local job = redis.call('HGET', KEYS[1], ARGV[1])
if not job then return 0 end
if redis.call('EXISTS', ARGV[2] .. job) == 1 then return 1 end
local score = redis.call('ZSCORE', KEYS[2], job)
if not score then return 0 end
local mine = redis.call('ZSCORE', KEYS[2], ARGV[3])
if not mine or tonumber(score) <= tonumber(mine) then return 1 end
return 0
"""


class TurnSignals:
    """In-process turns: which of a user's numbers this process's jobs hold (waiting or applying),
    and wake-ups for the job waiting on number N the moment a job here applies N, with no Redis
    read (a user's backlog in one worker otherwise polls Redis every ``POLL_S`` per waiting job)."""

    def __init__(self) -> None:
        # user -> awaited number -> (event, how many watch it)
        self._events: dict[str, dict[int, tuple[asyncio.Event, int]]] = {}
        self._held: dict[str, dict[int, int]] = {}  # user -> number -> how many jobs hold it

    @contextlib.contextmanager
    def watching(self, user_id: str, awaited: int) -> Iterator[asyncio.Event]:
        """The event set when a job of this process applies the user's number ``awaited`` (or a
        later one). Take it before reading Redis, so an apply between the read and the wait still
        wakes. An event nobody watches any more is dropped: the map only holds waiting jobs."""
        user = self._events.setdefault(user_id, {})
        event, watchers = user.get(awaited) or (asyncio.Event(), 0)
        user[awaited] = (event, watchers + 1)
        try:
            yield event
        finally:
            current = self._events.get(user_id, {}).get(awaited)
            if current is not None and current[0] is event:
                if current[1] == 1:
                    del self._events[user_id][awaited]
                    if not self._events[user_id]:
                        del self._events[user_id]
                else:
                    self._events[user_id][awaited] = (event, current[1] - 1)

    def notify(self, user_id: str, applied: int) -> None:
        user = self._events.get(user_id)
        if user is None:
            return
        for awaited in [number for number in user if number <= applied]:
            event, _ = user.pop(awaited)
            event.set()
        if not user:
            del self._events[user_id]

    @contextlib.contextmanager
    def holding(self, user_id: str, number: int | None) -> Iterator[None]:
        """Mark the user's ``number`` as held by a job of this process while it waits and applies."""
        if number is None:
            yield
            return
        held = self._held.setdefault(user_id, {})
        held[number] = held.get(number, 0) + 1
        try:
            yield
        finally:
            held[number] -= 1
            if held[number] == 0:
                del held[number]
                if not held:
                    del self._held[user_id]

    def holds(self, user_id: str, number: int) -> bool:
        return number in self._held.get(user_id, {})

    def __len__(self) -> int:
        return len(self._events) + len(self._held)


async def applied_sequence(redis: Any, user_id: str) -> int:
    value = await redis.get(APPLIED_SEQUENCE_KEY.format(user_id=user_id))
    return int(value or 0)


@dataclass(frozen=True)
class QueuePlace:
    """Where the waiting job sits: its arq queue and its own job id (its score is read there)."""

    queue_name: str
    job_id: str


async def predecessor_coming(redis: Any, exchange: Exchange, place: QueuePlace) -> bool:
    """Whether the job carrying the exchange's number N-1 is running or queued ahead of ``place``."""
    key = SEQUENCE_JOBS_KEY.format(user_id=exchange.scope.user_id)
    sequence = (exchange.sequence or 1) - 1
    found = await redis.eval(
        PREDECESSOR_SCRIPT, 2, key, place.queue_name, sequence, in_progress_key_prefix, place.job_id
    )
    return bool(found)


def turn_has_come(exchange: Exchange, applied: int) -> bool:
    """Whether every earlier exchange of the user is applied, given the user's applied number
    (it never moves back, so a number read earlier that is high enough stays true)."""
    return exchange.sequence is None or applied >= exchange.sequence - 1


async def wait_for_turn(
    redis: Any,
    exchange: Exchange,
    wait_s: float = ORDER_WAIT_S,
    signals: TurnSignals | None = None,
    place: QueuePlace | None = None,
) -> bool:
    """True when every earlier exchange of the user is applied; False if the wait ran out, or,
    given the job's ``place``, as soon as the predecessor is seen not coming twice in a row (one
    poll apart, as a job just deferred by another worker moves in the queue)."""
    if exchange.sequence is None:
        return True
    user_id, predecessor = exchange.scope.user_id, exchange.sequence - 1
    deadline = time.monotonic() + wait_s
    idle_looks = 0
    while True:
        with signals.watching(user_id, predecessor) if signals is not None else contextlib.nullcontext() as applied:
            if turn_has_come(exchange, await applied_sequence(redis, user_id)):
                return True
            if time.monotonic() > deadline:
                return False
            # A predecessor held by a job of this process wakes this one when applied: no polling.
            local = signals is not None and signals.holds(user_id, predecessor)
            if place is not None and not local:
                idle_looks = 0 if await predecessor_coming(redis, exchange, place) else idle_looks + 1
                if idle_looks >= 2:
                    return False
            if applied is None:
                await asyncio.sleep(POLL_S)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(applied.wait(), LOCAL_POLL_S if local else POLL_S)
            if applied.is_set():
                return True  # applied here just now (mark_applied advanced Redis first)


async def stalled_for(redis: Any, user_id: str) -> float:
    """Seconds since the user's applied number last moved (infinite if it never did)."""
    value = await redis.get(APPLIED_AT_KEY.format(user_id=user_id))
    return time.time() - float(value) if value else float("inf")


async def take_turn(
    redis: Any,
    exchange: Exchange,
    waited_s: float,
    wait_s: float = ORDER_WAIT_S,
    signals: TurnSignals | None = None,
    place: QueuePlace | None = None,
) -> None:
    """Return once it is the exchange's turn, or once it has waited ``wait_s`` in all while the
    user's exchanges made no progress for as long (then it goes ahead and says so).

    It waits in its worker slot while the predecessor is coming (running, or queued ahead of
    it), up to ``TURN_HOLD_S``; otherwise it gives the slot back (arq ``Retry``): a job holding a
    slot for a predecessor that is not coming would starve it. A deferred job goes behind every
    job queued before it, so deferring while the predecessor is coming would shuffle a user's
    backlog out of order and make it cycle through the slots (measured: a one-user burst of 1,000
    exchanges then drained at a few per second)."""
    hold = min(TURN_HOLD_S if place is not None else TURN_POLL_S, wait_s)
    if await wait_for_turn(redis, exchange, hold, signals, place):
        return
    if waited_s < wait_s or await stalled_for(redis, exchange.scope.user_id) < wait_s:
        raise Retry(defer=ORDER_RECHECK_S)
    logger.warning(
        "exchange %s (#%d of its user) waited %.0fs for #%d; applying it now",
        exchange.request_id,
        exchange.sequence,
        waited_s,
        (exchange.sequence or 1) - 1,
    )


@dataclass(frozen=True)
class Ledger:
    """The key that marks a job's exchange as applied, so a redelivered job is a no-op."""

    key: str
    ttl_s: int


async def mark_applied(
    redis: Any, exchange: Exchange, signals: TurnSignals | None = None, ledger: Ledger | None = None
) -> None:
    """Advance the user's applied number to the exchange's, and write its ``ledger`` if given."""
    if exchange.sequence is None:  # a job queued before exchanges were numbered
        if ledger is not None:
            await redis.set(ledger.key, "1", ex=ledger.ttl_s)
        return
    user_id = exchange.scope.user_id
    keys = [
        APPLIED_SEQUENCE_KEY.format(user_id=user_id),
        APPLIED_AT_KEY.format(user_id=user_id),
        SEQUENCE_JOBS_KEY.format(user_id=user_id),
    ]
    ttl = 0
    if ledger is not None:
        keys.append(ledger.key)
        ttl = ledger.ttl_s
    await redis.eval(ADVANCE_SCRIPT, len(keys), *keys, exchange.sequence, time.time(), ttl)
    if signals is not None:
        signals.notify(user_id, exchange.sequence)
