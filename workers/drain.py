"""The job: apply one user's pending exchanges, in order, while holding the user's claim.

The mechanism (the list, the claim, its lease and the sweep) is mnemo.user_order; this module
runs it. ``drain_user`` applies the list's head, pops it in the same script that hands back the
next head, and stops when the list is empty (the claim released atomically), when its claim is
not its own (a stale job: another drain owns the user), or after ``drain_budget_s``: then it
hands the user to a new job at the back of the queue, so one user's long backlog shares the
worker with everyone else's. A heartbeat renews the claim while the job runs.

Transient failures (LLM 429/5xx/timeouts, store or embedder down) hand the user off with an
exponential delay, the exchange still first in line, up to ``worker.max_tries`` failures; an
answer that stays malformed is recorded as failed. Either way the user's next exchanges go on.
Writes are idempotent (every id derives from the request id), so an exchange replayed after a
crash between its writes and its pop writes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mnemo.errors import EmbedderError, ExtractionError, QueueError, StoreError, TransientExtractionError
from mnemo.imports import record_outcome
from mnemo.ingest import IngestResult, MemoryWriter
from mnemo.job_metrics import JobRecord, record_job
from mnemo.logs import request_id_var
from mnemo.models import Memory, MemoryEvent
from mnemo.queue import Exchange, decode_exchange
from mnemo.store import MemoryStore
from mnemo.user_order import HEARTBEAT_S, UserOrder, epoch_ms

logger = logging.getLogger(__name__)
T = TypeVar("T")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# A drain rides out a Redis outage this long, its claim's lease permitting: once Redis is back it
# goes on at once, instead of dying and leaving its user to the sweep after the lease lapses.
REDIS_WAIT_S = 60.0
FAILED_KEY = "mnemo:failed:{request_id}"
FAILED_TTL_S = 30 * 24 * 3600
MAX_BACKOFF_S = 300.0


async def through_outage(call: Callable[[], Awaitable[T]], wait_s: float = REDIS_WAIT_S) -> T:
    """``call()``, retried with backoff while Redis is unreachable, for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return await call()
        except REDIS_DOWN:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


def backoff_seconds(failures: int, base: float) -> float:
    return float(min(MAX_BACKOFF_S, base * 2 ** max(0, failures - 1)))


class ErasedSince(Exception):
    """The user was erased after this exchange started: it must write nothing."""


class ClaimLost(Exception):
    """Another drain owns the user now (this job's lease lapsed): stop without writing."""


class FencedStore:
    """The store as one exchange's writer sees it: before the exchange's first write, the
    user's writing marker is taken atomically with the checks that this job still owns the user
    and that the user was not erased since the exchange started (mnemo.user_order.FENCE_SCRIPT).
    Reads pass straight through."""

    def __init__(self, store: MemoryStore, fence: Callable[[], Any]) -> None:
        self._store = store
        self._fence = fence
        self._fenced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _before_write(self) -> None:
        if not self._fenced:
            await self._fence()
            self._fenced = True

    async def upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        await self._before_write()
        await self._store.upsert(memories, vectors)

    async def invalidate(self, memory_id: str, invalid_at: datetime, superseded_by: str | None) -> None:
        await self._before_write()
        await self._store.invalidate(memory_id, invalid_at, superseded_by)

    async def add_events(self, events: Sequence[MemoryEvent]) -> None:
        if events:
            await self._before_write()
        await self._store.add_events(events)

    async def delete_memories(self, memory_ids: Sequence[str]) -> None:
        await self._before_write()
        await self._store.delete_memories(memory_ids)


@dataclass
class Drain:
    """One run of ``drain_user``: its job, its user and what it has done so far."""

    ctx: dict[str, Any]
    user_id: str
    job_id: str
    applied: int = 0
    failed: int = 0
    erased: int = 0

    @property
    def order(self) -> UserOrder:
        order: UserOrder = self.ctx["order"]
        return order

    @property
    def redis(self) -> Any:
        return self.ctx["redis"]

    async def fence(self, exchange: Exchange) -> None:
        started = started_ms(exchange)
        verdict = await through_outage(lambda: self.order.fence(self.redis, self.user_id, self.job_id, started))
        if verdict == 0:
            raise ClaimLost(self.user_id)
        if verdict < 0:
            raise ErasedSince(exchange.request_id)

    def writer(self, exchange: Exchange) -> MemoryWriter:
        make: Callable[[MemoryStore], MemoryWriter] = self.ctx["make_writer"]
        store = FencedStore(self.ctx["core"].store, lambda: self.fence(exchange))
        return make(store)  # a MemoryStore by delegation (__getattr__) and its own write methods

    def result(self, status: str) -> dict[str, Any]:
        return {"status": status, "applied": self.applied, "failed": self.failed, "erased": self.erased}


def started_ms(exchange: Exchange) -> int:
    return epoch_ms(exchange.started_at.timestamp())


async def drain_user(ctx: dict[str, Any], user_id: str) -> dict[str, Any]:
    drain = Drain(ctx, user_id, str(ctx["job_id"]))
    step = await through_outage(lambda: drain.order.step(drain.redis, user_id, drain.job_id, start=True))
    if not step.owned:
        return drain.result("stale")
    deadline = time.monotonic() + ctx["drain_budget_s"]
    async with heartbeat(drain):
        while step.head is not None:
            try:
                done = await apply_entry(drain, step.head)
            except ClaimLost:
                return drain.result("lost")
            if not done:
                return drain.result("deferred")
            step = await through_outage(partial(drain.order.step, drain.redis, user_id, drain.job_id, step.head))
            if not step.owned:
                return drain.result("lost")
            if step.head is not None and time.monotonic() > deadline:
                await through_outage(lambda: drain.order.hand_off(drain.redis, user_id, drain.job_id))
                return drain.result("handed-off")
    return drain.result("drained")


@contextlib.asynccontextmanager
async def heartbeat(drain: Drain) -> AsyncIterator[None]:
    """Renew the claim (and the writing marker) while the job runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                if not await drain.order.heartbeat(drain.redis, drain.user_id, drain.job_id):
                    logger.warning("drain of a user lost its claim; stopping at the next step")
                    return
            except Exception as exc:  # Redis away: the lease may lapse; the next step will tell
                logger.warning("drain heartbeat failed: %s", type(exc).__name__)

    task = asyncio.create_task(beat(), name="mnemo-drain-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def apply_entry(drain: Drain, payload: str) -> bool:
    """Apply one pending exchange; True when it is done with (applied, failed for good, or
    dropped), False when the user was handed off to retry it later."""
    try:
        exchange = decode_exchange(payload)
    except (QueueError, ValueError) as exc:  # unreadable: it can never apply, so it must not block the user
        logger.error("dropping an unreadable pending exchange: %s", exc)
        drain.failed += 1
        return True
    request_id_var.set(exchange.request_id)
    started = time.perf_counter()
    try:
        # Redis failing mid-exchange (the fence, the write quota) redoes the exchange once it is
        # back: its writes are idempotent, and a fresh writer fences again.
        result = await through_outage(lambda: drain.writer(exchange).process(exchange))
    except ErasedSince:
        drain.erased += 1
        logger.info("exchange %s dropped: its user was erased after it started", exchange.request_id)
        await count_import(drain, exchange, "dropped")
        return True
    except (TransientExtractionError, StoreError, EmbedderError) as exc:
        return await retry_later(drain, exchange, exc, started)
    except ExtractionError as exc:
        await record_failure(drain, exchange, exc, started)
        return True
    drain.applied += 1
    await measure(drain, applied_record(result, time.perf_counter() - started))
    await count_import(drain, exchange, "applied", len(result.created))
    log_applied(exchange, result)
    return True


async def count_import(drain: Drain, exchange: Exchange, outcome: str, memories: int = 0) -> None:
    """An imported exchange's outcome on its import's progress record (mnemo.imports); never
    fails the exchange, which is done with either way."""
    if exchange.import_id is None:
        return
    import_id = exchange.import_id
    try:
        await through_outage(lambda: record_outcome(drain.redis, drain.ctx["queue_name"], import_id, outcome, memories))
    except Exception as exc:
        logger.warning("could not count exchange %s on its import: %s", exchange.request_id, type(exc).__name__)


async def retry_later(drain: Drain, exchange: Exchange, exc: Exception, started: float) -> bool:
    started_at = started_ms(exchange)
    failures = await through_outage(
        lambda: drain.order.add_failure(drain.redis, drain.user_id, exchange.request_id, started_at)
    )
    if failures < 0:
        drain.erased += 1
        await count_import(drain, exchange, "dropped")
        return True
    if failures >= drain.ctx["max_failures"]:
        await record_failure(drain, exchange, exc, started)
        return True
    delay = backoff_seconds(failures, drain.ctx["retry_base_delay_s"])
    logger.warning("exchange %s: %s; retrying in %.1fs", exchange.request_id, exc, delay)
    await measure(drain, JobRecord("retry", time.perf_counter() - started))
    await through_outage(lambda: drain.order.hand_off(drain.redis, drain.user_id, drain.job_id, delay))
    return False


async def record_failure(drain: Drain, exchange: Exchange, exc: Exception, started: float) -> None:
    logger.error("exchange %s failed for good: %s", exchange.request_id, exc)
    drain.failed += 1
    failure = {"request_id": exchange.request_id, "user_id": exchange.scope.user_id, "reason": str(exc)[:500]}
    fields = [part for pair in failure.items() for part in pair]
    key = FAILED_KEY.format(request_id=exchange.request_id)
    # Not written for a user erased since the exchange started (the reason may quote its text).
    started_at = started_ms(exchange)
    await through_outage(lambda: drain.order.note(drain.redis, drain.user_id, started_at, key, FAILED_TTL_S, fields))
    await measure(drain, JobRecord("failed", time.perf_counter() - started))
    await count_import(drain, exchange, "failed")


async def measure(drain: Drain, record: JobRecord) -> None:
    await record_job(drain.redis, drain.ctx["queue_name"], record)


def applied_record(result: IngestResult, duration_s: float) -> JobRecord:
    return JobRecord(
        outcome="applied",
        duration_s=duration_s,
        llm_calls=result.usage.calls,
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        memories_created=len(result.created),
        memories_invalidated=len(result.invalidated),
    )


def log_applied(exchange: Exchange, result: IngestResult) -> None:
    logger.info(
        "exchange %s applied: %d facts (%d restated), %d created, %d invalidated",
        exchange.request_id,
        result.facts,
        result.restated,
        len(result.created),
        len(result.invalidated),
    )


async def sweep_forever(redis: Any, order: UserOrder, interval_s: float) -> None:
    """Every ``interval_s``: schedule a drain for each user whose claim lapsed with work left
    (its worker died). Runs in every worker; the script is atomic, so sweeps never collide."""
    while True:
        try:
            scheduled = await order.sweep(redis)
        except Exception as exc:  # Redis away: sweep again once it is back
            logger.debug("sweep failed: %s", type(exc).__name__)
        else:
            if scheduled:
                logger.warning("rescheduled the drains of %d users whose worker stopped", scheduled)
        await asyncio.sleep(interval_s)
