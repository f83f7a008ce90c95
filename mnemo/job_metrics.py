"""Worker metrics kept in Redis, so any gateway's /metrics reports every worker's jobs.

In server mode the workers are other processes (often other machines) than the gateways, so
they cannot share an in-memory registry, and scraping each worker would need a port per
worker. Instead each job adds its outcome, duration and LLM usage to one Redis hash per
queue (one script: atomic, one round trip), and the gateway reads the hash at scrape time.
Under ``mnemo up`` the same path is used; there the hash lives in the embedded Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

JOB_METRICS_KEY = "mnemo:metrics:worker:{queue_name}"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OUTCOMES = ("applied", "already_applied", "failed", "retry", "error")
WRITE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class JobRecord:
    outcome: str
    duration_s: float
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    memories_created: int = 0
    memories_invalidated: int = 0


@dataclass
class JobTotals:
    """What the hash holds, read back: counters by field, and the duration histogram."""

    jobs: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)
    duration_sum: float = 0.0
    duration_count: float = 0.0


def _bucket_field(bound: float) -> str:
    return f"duration_bucket:{bound:g}"


# One call per job, applied atomically: the float sum, then (field, increment) pairs. A pipeline
# of one HINCRBY per field cost ~0.2 ms of the worker's event loop per job to pack and parse.
RECORD_SCRIPT = """
redis.call('HINCRBYFLOAT', KEYS[1], 'duration_sum', ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


def increments(record: JobRecord) -> list[tuple[str, int]]:
    """The integer fields one job adds to: its outcome, the duration count and every histogram
    bucket it falls in (the buckets are cumulative), and its non-zero usage counters."""
    fields = [(f"jobs:{record.outcome}", 1), ("duration_count", 1)]
    fields += [(_bucket_field(bound), 1) for bound in DURATION_BUCKETS if record.duration_s <= bound]
    counters = ("llm_calls", "prompt_tokens", "completion_tokens", "memories_created", "memories_invalidated")
    fields += [(name, value) for name in counters if (value := getattr(record, name))]
    return fields


async def record_job(redis: Any, queue_name: str, record: JobRecord) -> None:
    """Add one job to the totals; never fails the job (metrics are best effort)."""
    key = JOB_METRICS_KEY.format(queue_name=queue_name)
    pairs = [part for field_, value in increments(record) for part in (field_, value)]
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await redis.eval(RECORD_SCRIPT, 1, key, f"{record.duration_s:.9f}", *pairs)
    except Exception as exc:  # a metrics write must never turn a done job into a retried one
        logger.warning("could not record job metrics: %s", exc)


# Memories a job did not write as asked, by why (mnemo.ingest): fields "memories_skipped:<reason>"
# and "memories_truncated". Recorded by the writer itself, apart from the job's record.
SKIP_REASONS = ("per_exchange", "rate_limited")
ADD_SCRIPT = """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


async def record_skipped(redis: Any, queue_name: str, skipped: Mapping[str, int], truncated: int = 0) -> None:
    """Add one exchange's skipped (by reason) and truncated memories; best effort, like record_job."""
    fields = [(f"memories_skipped:{reason}", count) for reason, count in skipped.items() if count]
    fields += [("memories_truncated", truncated)] if truncated else []
    if not fields:
        return
    key = JOB_METRICS_KEY.format(queue_name=queue_name)
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await redis.eval(ADD_SCRIPT, 1, key, *[part for pair in fields for part in pair])
    except Exception as exc:  # a metrics write must never fail the job
        logger.warning("could not record skipped memories: %s", exc)


def parse_totals(raw: dict[bytes, bytes] | dict[str, str]) -> JobTotals:
    totals = JobTotals()
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        number = float(value)
        if name.startswith("jobs:"):
            totals.jobs[name[5:]] = number
        elif name.startswith("duration_bucket:"):
            totals.buckets[float(name[16:])] = number
        elif name == "duration_sum":
            totals.duration_sum = number
        elif name == "duration_count":
            totals.duration_count = number
        else:
            totals.counters[name] = number
    return totals


async def read_totals(redis: Any, queue_name: str) -> JobTotals:
    return parse_totals(await redis.hgetall(JOB_METRICS_KEY.format(queue_name=queue_name)))
