"""The job: one exchange in, memory changes out. Thin: the work is in mnemo.ingest.

Transient failures (LLM 429/5xx/timeouts, store or embedder down) are retried by arq with
exponential backoff; an answer that stays malformed fails the job without writing anything.
A ledger key per request id makes a redelivered job (worker killed after applying) a no-op.
Jobs of one user run one at a time and in the order the user's exchanges completed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from arq import Retry
from redis.exceptions import LockError

from mnemo.errors import EmbedderError, ExtractionError, StoreError, TransientExtractionError
from mnemo.ingest import IngestResult, MemoryWriter
from mnemo.queue import Exchange, decode_exchange
from workers.ordering import mark_applied, wait_for_turn

logger = logging.getLogger(__name__)

APPLIED_KEY = "mnemo:applied:{request_id}"
FAILED_KEY = "mnemo:failed:{request_id}"
LEDGER_TTL_S = 30 * 24 * 3600
USER_LOCK_KEY = "mnemo:lock:user:{user_id}"
USER_LOCK_TTL_S = 600
USER_LOCK_WAIT_S = 30
MAX_BACKOFF_S = 300.0


def backoff_seconds(job_try: int, base: float) -> float:
    return float(min(MAX_BACKOFF_S, base * 2 ** max(0, job_try - 1)))


async def process_exchange(ctx: dict[str, Any], payload: str) -> dict[str, Any]:
    exchange = decode_exchange(payload)
    redis = ctx["redis"]
    if await redis.exists(APPLIED_KEY.format(request_id=exchange.request_id)):
        await mark_applied(redis, exchange)
        return {"status": "already-applied", "request_id": exchange.request_id}
    await wait_for_turn(redis, exchange)
    started = time.perf_counter()
    try:
        result = await apply_in_user_lock(ctx, exchange)
    except (TransientExtractionError, StoreError, EmbedderError) as exc:
        delay = backoff_seconds(ctx.get("job_try", 1), ctx["retry_base_delay_s"])
        logger.warning("exchange %s: %s; retrying in %.1fs", exchange.request_id, exc, delay)
        raise Retry(defer=delay) from exc
    except ExtractionError as exc:
        return await record_failure(redis, exchange, exc)
    await redis.set(APPLIED_KEY.format(request_id=exchange.request_id), "1", ex=LEDGER_TTL_S)
    await mark_applied(redis, exchange)
    return outcome(exchange, result, started)


async def apply_in_user_lock(ctx: dict[str, Any], exchange: Exchange) -> IngestResult:
    """One job per user at a time, across every worker: two exchanges of one user must not
    both decide ADD for the same fact against the same stored state."""
    redis = ctx["redis"]
    writer: MemoryWriter = ctx["writer"]
    lock = redis.lock(USER_LOCK_KEY.format(user_id=exchange.scope.user_id), timeout=USER_LOCK_TTL_S)
    if not await lock.acquire(blocking_timeout=USER_LOCK_WAIT_S):
        raise Retry(defer=backoff_seconds(ctx.get("job_try", 1), ctx["retry_base_delay_s"]))
    try:
        return await writer.process(exchange)
    finally:
        try:
            await lock.release()
        except LockError:  # expired while the job ran; the next holder already owns it
            logger.warning("user lock expired before release")


async def record_failure(redis: Any, exchange: Exchange, exc: Exception) -> dict[str, Any]:
    logger.error("exchange %s failed for good: %s", exchange.request_id, exc)
    failure = {"request_id": exchange.request_id, "user_id": exchange.scope.user_id, "reason": str(exc)[:500]}
    await redis.hset(FAILED_KEY.format(request_id=exchange.request_id), mapping=failure)
    await mark_applied(redis, exchange)  # a failed exchange must not hold up the user's next ones
    return {"status": "failed", **failure}


def outcome(exchange: Exchange, result: IngestResult, started: float) -> dict[str, Any]:
    logger.info(
        "exchange %s applied: %d facts, %d created, %d invalidated",
        exchange.request_id,
        result.facts,
        len(result.created),
        len(result.invalidated),
    )
    return {
        "status": "applied",
        "request_id": exchange.request_id,
        "sequence": exchange.sequence,
        "mode": result.mode,
        "facts": result.facts,
        "created": result.created,
        "invalidated": result.invalidated,
        "llm_calls": result.usage.calls,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
