"""The job as the worker runs it: process_exchange, measured into the Redis metrics hash
(mnemo.job_metrics) and run with the exchange's request id in every log line."""

from __future__ import annotations

import json
import time
from typing import Any

from arq import Retry

from mnemo.job_metrics import JobRecord, record_job
from mnemo.logs import request_id_var
from workers.jobs import process_exchange

STATUS_OUTCOMES = {"applied": "applied", "already-applied": "already_applied", "failed": "failed"}


def request_id_of(payload: str) -> str | None:
    try:
        request_id = json.loads(payload).get("request_id")
    except (ValueError, AttributeError):
        return None
    return request_id if isinstance(request_id, str) else None


async def measured_process_exchange(ctx: dict[str, Any], payload: str, sequence: int | None = None) -> dict[str, Any]:
    request_id_var.set(request_id_of(payload))  # each arq job runs in its own task, so its own context
    started = time.perf_counter()
    try:
        result = await process_exchange(ctx, payload, sequence)
    except Retry:
        await record(ctx, JobRecord("retry", time.perf_counter() - started))
        raise
    except Exception:
        await record(ctx, JobRecord("error", time.perf_counter() - started))
        raise
    await record(ctx, job_record(result, time.perf_counter() - started))
    return result


def job_record(result: dict[str, Any], duration_s: float) -> JobRecord:
    return JobRecord(
        outcome=STATUS_OUTCOMES.get(str(result.get("status")), "error"),
        duration_s=duration_s,
        llm_calls=int(result.get("llm_calls", 0)),
        prompt_tokens=int(result.get("prompt_tokens", 0)),
        completion_tokens=int(result.get("completion_tokens", 0)),
        memories_created=len(result.get("created", [])),
        memories_invalidated=len(result.get("invalidated", [])),
    )


async def record(ctx: dict[str, Any], job: JobRecord) -> None:
    await record_job(ctx["redis"], ctx["queue_name"], job)
