"""When a worker sharing the gateway's process (``mnemo up``) may start jobs: the decisions,
as plain functions of what the worker knows at a poll, so they are tested without a worker.

While chats are in flight the worker starts a job only when every running job is waiting (on
its LLM), one per poll, so its CPU work fills the gateway's idle time instead of adding to chat
latency; once it is ``catch_up_after_s`` behind, a job that ends makes room for the next at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intake:
    read_limit: int  # how many queued jobs one poll reads
    allow_pick: bool  # whether the poll may start any


def job_intake(*, chats_in_flight: bool, running: int, waiting: int, full_read_limit: int) -> Intake:
    if not chats_in_flight:
        return Intake(full_read_limit, True)
    # Running jobs stay at the head of the queue until they finish: reading one more than are
    # running reaches the next job (reading 1 would only ever find the running one).
    return Intake(running + 1, running <= waiting)


def catching_up(*, chats_in_flight: bool, lag_s: float, catch_up_after_s: float) -> bool:
    """Whether jobs follow each other without waiting for a poll while chats are in flight."""
    return chats_in_flight and lag_s >= catch_up_after_s


def lag_seconds(now_s: float, score_ms: int) -> float:
    """How long a job had been due when it started (arq scores a job by when it is due, in ms)."""
    return max(0.0, now_s - score_ms / 1000)
