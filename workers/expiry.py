"""The retention sweep as an arq cron job: erase the memories whose expiry has passed
(mnemo.retention.sweep) and count them in the workers' metrics. arq runs a cron job once per
scheduled moment across all workers (its job id names the moment)."""

from __future__ import annotations

from typing import Any

from arq.cron import CronJob, cron

from mnemo.config import RetentionSettings
from mnemo.retention import record_expired, sweep

EXPIRE_JOB = "expire_memories"


async def expire_memories(ctx: dict[str, Any]) -> int:
    erased = await sweep(ctx["core"].store)
    await record_expired(ctx["redis"], ctx["queue_name"], erased)
    return erased


def expiry_cron(settings: RetentionSettings) -> CronJob:
    """Every ``sweep_interval_s``: on those seconds of each minute, or those minutes of each hour."""
    interval = settings.sweep_interval_s
    if interval < 60:
        return cron(expire_memories, name=EXPIRE_JOB, second=set(range(0, 60, interval)), keep_result=0)
    return cron(expire_memories, name=EXPIRE_JOB, minute=set(range(0, 60, interval // 60)), second=0, keep_result=0)
