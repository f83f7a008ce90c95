"""The job: one exchange in, memory changes out. Thin: the work is in mnemo.ingest.

Transient failures (LLM 429/5xx/timeouts, store or embedder down) are retried by arq with
exponential backoff; an answer that stays malformed fails the job without writing anything.
A ledger key per request id makes a redelivered job (worker killed after applying) a no-op.
Jobs of one user run one at a time and in the order the user's exchanges completed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mnemo.errors import EmbedderError, ExtractionError, StoreError, TransientExtractionError
from mnemo.ingest import IngestResult, MemoryWriter
from mnemo.queue import APPLIED_SEQUENCE_KEY, Exchange, decode_job
from workers.ordering import (
    ORDER_RECHECK_S,
    ORDER_WAIT_S,
    Ledger,
    QueuePlace,
    TurnSignals,
    mark_applied,
    take_turn,
    turn_has_come,
)
from workers.waits import JobWaits

logger = logging.getLogger(__name__)

APPLIED_KEY = "mnemo:applied:{request_id}"
FAILED_KEY = "mnemo:failed:{request_id}"
FAILURES_KEY = "mnemo:failures:{request_id}"
LEDGER_TTL_S = 30 * 24 * 3600
USER_LOCK_KEY = "mnemo:lock:user:{user_id}"
USER_LOCK_TTL_S = 600
USER_LOCK_WAIT_S = 30
MAX_BACKOFF_S = 300.0


def backoff_seconds(job_try: int, base: float) -> float:
    return float(min(MAX_BACKOFF_S, base * 2 ** max(0, job_try - 1)))


async def process_exchange(ctx: dict[str, Any], payload: str, sequence: int | None = None) -> dict[str, Any]:
    exchange = decode_job(payload, sequence)
    try:
        return await apply_exchange(ctx, exchange)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Redis went away mid-job: retry it rather than let arq record it as failed for good.
        delay = backoff_seconds(ctx.get("job_try", 1), ctx["retry_base_delay_s"])
        logger.warning("exchange %s: redis unavailable (%s); retrying in %.1fs", exchange.request_id, exc, delay)
        raise Retry(defer=delay) from exc


async def apply_exchange(ctx: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
    redis = ctx["redis"]
    ledger = APPLIED_KEY.format(request_id=exchange.request_id)
    # One round trip for both things a job checks first: was it applied, and is it its turn.
    done, applied = await redis.mget(ledger, APPLIED_SEQUENCE_KEY.format(user_id=exchange.scope.user_id))
    if done is not None:
        await mark_applied(redis, exchange, ctx.get("turns"))
        # A retry of a job whose first try applied it but lost Redis before reporting back.
        return {"status": "already-applied", "request_id": exchange.request_id, "sequence": exchange.sequence}
    turns: TurnSignals | None = ctx.get("turns")
    with turns.holding(exchange.scope.user_id, exchange.sequence) if turns else contextlib.nullcontext():
        if not turn_has_come(exchange, int(applied or 0)):
            with waiting(ctx):
                await take_turn(
                    redis, exchange, waited_since(ctx), ctx.get("order_wait_s", ORDER_WAIT_S), turns, queue_place(ctx)
                )
        started = time.perf_counter()
        try:
            result = await apply_in_user_lock(ctx, exchange)
        except (TransientExtractionError, StoreError, EmbedderError) as exc:
            return await retry_later(ctx, exchange, exc)
        except ExtractionError as exc:
            return await record_failure(redis, exchange, exc, turns)
        await mark_applied(redis, exchange, turns, ledger=Ledger(ledger, LEDGER_TTL_S))
    return outcome(exchange, result, started)


def waiting(ctx: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """Count the job as waiting (holding its slot but no CPU) meanwhile; see workers.waits."""
    waits: JobWaits | None = ctx.get("waits")
    return waits.wait() if waits is not None else contextlib.nullcontext()


def queue_place(ctx: dict[str, Any]) -> QueuePlace | None:
    job_id, queue_name = ctx.get("job_id"), ctx.get("queue_name")
    return QueuePlace(queue_name, job_id) if isinstance(job_id, str) and isinstance(queue_name, str) else None


def waited_since(ctx: dict[str, Any]) -> float:
    enqueued = ctx.get("enqueue_time")
    return (datetime.now(UTC) - enqueued).total_seconds() if isinstance(enqueued, datetime) else 0.0


async def retry_later(ctx: dict[str, Any], exchange: Exchange, exc: Exception) -> dict[str, Any]:
    """Back off and retry, up to worker.max_tries failures. Failures are counted here, not by
    arq's try counter, which also counts the deferrals of a job waiting for its turn."""
    redis = ctx["redis"]
    key = FAILURES_KEY.format(request_id=exchange.request_id)
    failures = int(await redis.incr(key))
    await redis.expire(key, LEDGER_TTL_S)
    if failures >= ctx.get("max_failures", 1):
        return await record_failure(redis, exchange, exc, ctx.get("turns"))
    delay = backoff_seconds(failures, ctx["retry_base_delay_s"])
    logger.warning("exchange %s: %s; retrying in %.1fs", exchange.request_id, exc, delay)
    raise Retry(defer=delay) from exc


async def apply_in_user_lock(ctx: dict[str, Any], exchange: Exchange) -> IngestResult:
    """One job per user at a time, across every worker: two exchanges of one user must not
    both decide ADD for the same fact against the same stored state."""
    redis = ctx["redis"]
    writer: MemoryWriter = ctx["writer"]
    # A killed worker's lock must lapse by the time arq re-runs its job (job timeout + 10 s).
    ttl = ctx.get("user_lock_ttl_s", USER_LOCK_TTL_S)
    lock = redis.lock(USER_LOCK_KEY.format(user_id=exchange.scope.user_id), timeout=ttl)
    with waiting(ctx):
        acquired = await lock.acquire(blocking_timeout=ctx.get("user_lock_wait_s", USER_LOCK_WAIT_S))
    if not acquired:
        raise Retry(defer=ORDER_RECHECK_S)  # a deferral, not a failure: give the slot back
    try:
        return await writer.process(exchange)
    finally:
        try:
            await lock.release()
        except LockError:  # expired while the job ran; the next holder already owns it
            logger.warning("user lock expired before release")


async def record_failure(
    redis: Any, exchange: Exchange, exc: Exception, signals: TurnSignals | None = None
) -> dict[str, Any]:
    logger.error("exchange %s failed for good: %s", exchange.request_id, exc)
    failure = {"request_id": exchange.request_id, "user_id": exchange.scope.user_id, "reason": str(exc)[:500]}
    await redis.hset(FAILED_KEY.format(request_id=exchange.request_id), mapping=failure)
    await mark_applied(redis, exchange, signals)  # a failed exchange must not hold up the user's next ones
    return {"status": "failed", **failure}


def outcome(exchange: Exchange, result: IngestResult, started: float) -> dict[str, Any]:
    logger.info(
        "exchange %s applied: %d facts (%d restated), %d created, %d invalidated",
        exchange.request_id,
        result.facts,
        result.restated,
        len(result.created),
        len(result.invalidated),
    )
    return {
        "status": "applied",
        "request_id": exchange.request_id,
        "sequence": exchange.sequence,
        "mode": result.mode,
        "facts": result.facts,
        "restated": result.restated,
        "created": result.created,
        "invalidated": result.invalidated,
        "llm_calls": result.usage.calls,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
