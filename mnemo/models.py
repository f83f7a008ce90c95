"""The memory vocabulary: scopes, memories, their events, and search results.

Memories are never overwritten: a correction is a new memory that ``supersedes`` the old
one, and the old one gets ``invalid_at`` + ``superseded_by``. Every change is an event.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Ids derived from a request are uuid5s in this namespace, so a retried job writes the same ids.
ID_NAMESPACE = uuid.UUID("6f7c1c2e-4a53-4d0e-9d8e-2b6b1f0a9c11")

Action = Literal["ADD", "UPDATE", "DELETE", "NONE", "ERASE", "EXPIRE"]
Actor = Literal["worker", "api", "gateway"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def derived_id(*parts: str) -> str:
    """A stable id for something created by a given request: retries reproduce it."""
    return str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts)))


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


class Scope(BaseModel):
    """Whose memory: a user, optionally narrowed to one agent, tagged with a session."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    agent_id: str | None = None
    session_id: str | None = None


class Memory(BaseModel):
    id: str
    text: str
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    created_at: datetime
    invalid_at: datetime | None = None
    superseded_by: str | None = None
    supersedes: str | None = None
    version: int = 1
    source_request_id: str | None = None
    actor: Actor = "worker"
    metadata: dict[str, Any] = Field(default_factory=dict)
    # When retention erases it (mnemo.retention); None: kept. Stores never return it after that.
    expires_at: datetime | None = None
    # cl100k tokens of the memory's line in the injected block (mnemo.memory_line.count_line_tokens),
    # set by whoever sets the text, so the gateway budgets it without loading a token encoder.
    # None: stored before counts were (the gateway counts it). Kept out of the API's JSON: the
    # stores write it into the payload themselves (mnemo.store.payload).
    line_tokens: int | None = Field(default=None, exclude=True)

    @property
    def is_valid(self) -> bool:
        return self.invalid_at is None

    @property
    def scope(self) -> Scope:
        return Scope(user_id=self.user_id, agent_id=self.agent_id, session_id=self.session_id)

    def valid_at(self, moment: datetime) -> bool:
        return self.created_at <= moment and (self.invalid_at is None or self.invalid_at > moment)


class ScoredMemory(BaseModel):
    memory: Memory
    score: float


class MemoryEvent(BaseModel):
    """One change to one memory, with the reason and the exchange that caused it."""

    id: str
    memory_id: str
    user_id: str
    agent_id: str | None = None
    action: Action
    # For UPDATE: the version this event replaced (memory_id is the new version).
    previous_memory_id: str | None = None
    old_text: str | None = None
    new_text: str | None = None
    reason: str | None = None
    source_request_id: str | None = None
    model: str | None = None
    actor: Actor = "worker"
    created_at: datetime
