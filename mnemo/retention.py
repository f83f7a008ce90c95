"""Retention: how long a memory is kept, and erasing it once that time is up.

The policy (``retention`` settings) is applied when a memory is written: its ``expires_at`` is its
``created_at`` plus the TTL of the first metadata rule it matches, else of its scope (session,
agent or user), or the earlier time the writer asked for (an API field, a chat's
``X-Mnemo-Expires-In`` header): a writer may shorten what the policy keeps, never lengthen it. Times
count from when the memory was said, so imported history older than its TTL expires at once.

Expiry is erasure. From ``expires_at`` on the stores leave the memory out of every read (search,
injection, list, ``as_of``, export, get by id: checked at query time, a payload range filter on
``expires_ts``), and the worker's periodic :func:`sweep` deletes it for good, with the events that
carried its text (and, in the embedded store, from disk, as an erasure does), leaving an ``EXPIRE``
event without text. History does not keep what the policy says must go: ``as_of`` a moment before
the expiry does not show it either.

A policy applies to memories written while it is configured; memories stored before it keep the
expiry they were written with (none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mnemo.config import RetentionSettings
from mnemo.durations import parse_duration
from mnemo.job_metrics import ADD_SCRIPT, JOB_METRICS_KEY, WRITE_TIMEOUT_S
from mnemo.models import MemoryEvent, Scope, derived_id

if TYPE_CHECKING:
    from mnemo.store.base import MemoryStore

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500  # memories erased per store call
EXPIRED_METRIC = "memories_expired"  # the worker metrics hash field (mnemo_worker_memories_expired_total)


class Clock:
    """What "now" is for expiry. Tests move it forward (``offset``) instead of waiting."""

    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


CLOCK = Clock()


def now() -> datetime:
    return CLOCK.now()


@dataclass(frozen=True)
class Rule:
    key: str
    value: str | int | bool | None
    ttl: timedelta | None

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.key not in metadata:
            return False
        return self.value is None or metadata[self.key] == self.value


def _ttl(text: str | None) -> timedelta | None:
    return parse_duration(text) if text is not None else None


class RetentionPolicy:
    def __init__(self, settings: RetentionSettings | None = None) -> None:
        settings = settings or RetentionSettings()
        self.session = _ttl(settings.session_ttl)
        self.agent = _ttl(settings.agent_ttl)
        self.user = _ttl(settings.user_ttl)
        self.rules = [Rule(rule.key, rule.value, _ttl(rule.ttl)) for rule in settings.metadata_rules]

    def ttl(self, scope: Scope, metadata: Mapping[str, Any]) -> timedelta | None:
        for rule in self.rules:
            if rule.matches(metadata):
                return rule.ttl
        if scope.session_id is not None:
            return self.session
        return self.agent if scope.agent_id is not None else self.user

    def expires_at(
        self, scope: Scope, metadata: Mapping[str, Any], created_at: datetime, asked: datetime | None = None
    ) -> datetime | None:
        """The earlier of the policy's expiry and the one asked for (None: kept)."""
        ttl = self.ttl(scope, metadata)
        found = [moment for moment in (created_at + ttl if ttl else None, asked) if moment is not None]
        return min(found) if found else None


def expiry_event(memory_id: str, user_id: str, agent_id: str | None, expired_at: datetime, at: datetime) -> MemoryEvent:
    """What is left of an expired memory: that it existed and when it expired, without its text."""
    return MemoryEvent(
        id=derived_id(memory_id, "expire"),
        memory_id=memory_id,
        user_id=user_id,
        agent_id=agent_id,
        action="EXPIRE",
        reason=f"expired at {expired_at.isoformat()} (retention)",
        actor="worker",
        created_at=at,
    )


async def sweep(store: MemoryStore, moment: datetime | None = None, batch: int = SWEEP_BATCH) -> int:
    """Erase every memory expired at ``moment`` (now by default); returns how many."""
    moment = moment or now()
    erased = 0
    while expired := await store.expired(moment, limit=batch):
        await store.delete_memories([memory.id for memory in expired])
        events = [expiry_event(m.id, m.user_id, m.agent_id, m.expires_at or moment, moment) for m in expired]
        await store.add_events(events)
        erased += len(expired)
        if len(expired) < batch:
            break
        await asyncio.sleep(0)
    if erased:
        logger.info("retention: erased %d expired memories", erased)
    return erased


async def record_expired(redis: Any, queue_name: str, count: int) -> None:
    """Add to the workers' totals (/metrics: mnemo_worker_memories_expired_total); best effort."""
    if count <= 0:
        return
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await redis.eval(ADD_SCRIPT, 1, JOB_METRICS_KEY.format(queue_name=queue_name), EXPIRED_METRIC, count)
    except Exception as exc:  # metrics never fail the sweep
        logger.warning("could not record expired memories: %s", exc)
