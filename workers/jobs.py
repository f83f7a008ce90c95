"""The job: one exchange in, memory changes out. Thin: the work is in mnemo.ingest.

Transient failures (LLM 429/5xx/timeouts, store or embedder down) are retried by arq with
exponential backoff; an answer that stays malformed fails the job without writing anything.
A ledger key per request id makes a redelivered job (worker killed after applying) a no-op.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from arq import Retry
from redis.exceptions import LockError

from mnemo.errors import EmbedderError, ExtractionError, StoreError, TransientExtractionError
from mnemo.ingest import MemoryWriter
from mnemo.queue import decode_exchange

logger = logging.getLogger(__name__)

APPLIED_KEY = "mnemo:applied:{request_id}"
FAILED_KEY = "mnemo:failed:{request_id}"
LEDGER_TTL_S = 30 * 24 * 3600
USER_LOCK_KEY = "mnemo:lock:user:{user_id}"
USER_LOCK_TTL_S = 600
USER_LOCK_WAIT_S = 30
MAX_BACKOFF_S = 300.0


async def _release(lock: Any) -> None:
    try:
        await lock.release()
    except LockError:  # expired while the job ran; the next holder already owns it
        logger.warning("user lock expired before release")


def backoff_seconds(job_try: int, base: float) -> float:
    return float(min(MAX_BACKOFF_S, base * 2 ** max(0, job_try - 1)))


async def process_exchange(ctx: dict[str, Any], payload: str) -> dict[str, Any]:
    exchange = decode_exchange(payload)
    redis = ctx["redis"]
    applied_key = APPLIED_KEY.format(request_id=exchange.request_id)
    if await redis.exists(applied_key):
        return {"status": "already-applied", "request_id": exchange.request_id}
    writer: MemoryWriter = ctx["writer"]
    started = time.perf_counter()
    # One job per user at a time, across every worker: two exchanges of one user must not both
    # decide ADD for the same fact against the same stored state.
    lock = redis.lock(USER_LOCK_KEY.format(user_id=exchange.scope.user_id), timeout=USER_LOCK_TTL_S)
    try:
        if not await lock.acquire(blocking_timeout=USER_LOCK_WAIT_S):
            raise Retry(defer=backoff_seconds(ctx.get("job_try", 1), ctx["retry_base_delay_s"]))
        try:
            result = await writer.process(exchange)
        finally:
            await _release(lock)
    except (TransientExtractionError, StoreError, EmbedderError) as exc:
        delay = backoff_seconds(ctx.get("job_try", 1), ctx["retry_base_delay_s"])
        logger.warning("exchange %s: %s; retrying in %.1fs", exchange.request_id, exc, delay)
        raise Retry(defer=delay) from exc
    except ExtractionError as exc:
        logger.error("exchange %s failed for good: %s", exchange.request_id, exc)
        failure = {"request_id": exchange.request_id, "user_id": exchange.scope.user_id, "reason": str(exc)[:500]}
        await redis.hset(FAILED_KEY.format(request_id=exchange.request_id), mapping=failure)
        return {"status": "failed", **failure}
    await redis.set(applied_key, "1", ex=LEDGER_TTL_S)
    outcome = {
        "status": "applied",
        "request_id": exchange.request_id,
        "mode": result.mode,
        "facts": result.facts,
        "created": result.created,
        "invalidated": result.invalidated,
        "llm_calls": result.usage.calls,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    logger.info(
        "exchange %s applied: %d facts, %d created, %d invalidated",
        exchange.request_id,
        result.facts,
        len(result.created),
        len(result.invalidated),
    )
    return outcome
