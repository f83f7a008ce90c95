"""The worker's job totals in Redis: what one script call per job adds, read back as the gateway
reads it at scrape time."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as redis_async

from mnemo.job_metrics import JOB_METRICS_KEY, JobRecord, read_totals, record_job
from tests.conftest import REDIS_URL


async def test_jobs_add_their_outcome_duration_histogram_and_usage_to_the_totals() -> None:
    queue = f"mnemo:test:{uuid.uuid4().hex}"
    client = redis_async.Redis.from_url(REDIS_URL)
    try:
        await record_job(client, queue, JobRecord("applied", 0.2, llm_calls=2, prompt_tokens=400, memories_created=1))
        await record_job(client, queue, JobRecord("applied", 3.0, completion_tokens=40))
        await record_job(client, queue, JobRecord("retry", 0.01))
        totals = await read_totals(client, queue)
    finally:
        await client.delete(JOB_METRICS_KEY.format(queue_name=queue))
        await client.aclose()
    assert totals.jobs == {"applied": 2, "retry": 1}
    assert totals.duration_count == 3
    assert totals.duration_sum == pytest.approx(3.21)
    # Cumulative buckets: each job counts in every bucket at or above its duration.
    assert totals.buckets[0.05] == 1 and totals.buckets[0.1] == 1
    assert totals.buckets[0.25] == 2 and totals.buckets[2.5] == 2
    assert totals.buckets[5.0] == 3 and totals.buckets[300.0] == 3
    assert totals.counters == {"llm_calls": 2, "prompt_tokens": 400, "completion_tokens": 40, "memories_created": 1}


async def test_a_metrics_write_that_fails_does_not_raise() -> None:
    unreachable = redis_async.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        await record_job(unreachable, "mnemo:test:nowhere", JobRecord("applied", 0.1))
    finally:
        await unreachable.aclose()
