"""The narrow contract every memory store keeps, and the factory that picks a backend."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mnemo.models import Memory, MemoryEvent, Scope, ScoredMemory
from mnemo.store.users import UserListing


@dataclass(frozen=True)
class StoreIdentity:
    """What built the vectors: a store refuses to open a collection made by another embedder."""

    embedder_model: str
    dimension: int


class MemoryStore(Protocol):
    async def open(self) -> None:
        """Create or load the collections; raise StoreMismatchError on another embedder's data."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError when the store cannot serve requests."""

    def vector_cache_usage(self) -> tuple[int, int] | None:
        """Users whose dense vectors the store keeps in memory and their bytes; None without a cache."""

    async def upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        """Insert or replace memories by id (idempotent: same id, same point)."""

    async def invalidate(self, memory_id: str, invalid_at: datetime, superseded_by: str | None) -> None:
        """Mark a memory as no longer believed; its text stays."""

    async def get(self, memory_id: str) -> Memory | None: ...

    async def search(
        self,
        scope: Scope,
        vector: Sequence[float],
        *,
        limit: int,
        include_invalidated: bool = False,
        query_text: str | None = None,
        score_threshold: float | None = None,
    ) -> list[ScoredMemory]:
        """Best memories of the scope's user (and agent, when set: its own plus shared ones).

        With ``query_text``, dense and keyword (BM25) results are fused (see mnemo.store.hybrid) and
        scores are fused relevance; without it, scores are cosine similarity: either way in 0..1
        (clamped, see mnemo.store.hybrid.ranked_hits). ``score_threshold`` is a floor on cosine
        similarity for the dense side."""

    async def find_texts(self, scope: Scope, texts: Sequence[str]) -> builtins.list[Memory]:
        """Valid memories the scope sees (as ``search`` does) whose text equals one of ``texts`` up to
        case and spacing (:func:`mnemo.models.text_hash`): an indexed lookup, whatever the user holds."""

    async def list(
        self,
        scope: Scope,
        *,
        include_invalidated: bool = False,
        limit: int = 100,
        offset: int = 0,
        as_of: datetime | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Memory]:
        """A scope's memories, newest first. ``as_of`` means: valid at that moment (overrides include_invalidated).
        Agent and session, when set on the scope, match exactly; ``metadata`` entries match by equality."""

    async def add_events(self, events: Sequence[MemoryEvent]) -> None:
        """Append events (idempotent by event id)."""

    async def list_events(self, user_id: str, *, memory_id: str | None = None) -> builtins.list[MemoryEvent]:
        """Events of a user (optionally one memory), oldest first."""

    async def delete_user(self, user_id: str) -> tuple[int, int]:
        """Erase every memory and event of a user; return (memories, events) removed."""

    async def delete_memories(self, memory_ids: Sequence[str]) -> None:
        """Erase memories for good (hard delete), with every event that names them (their texts)."""

    async def set_expiry(self, memory_id: str, expires_at: datetime | None) -> None:
        """Set when a memory expires (mnemo.retention), in place; nothing for an unknown id."""

    async def expired(self, moment: datetime, *, limit: int) -> builtins.list[Memory]:
        """Up to ``limit`` memories (any user) whose expiry is at or before ``moment``: the sweep's work."""

    async def list_users(self, prefix: str = "", *, limit: int = 100, offset: int = 0) -> UserListing:
        """The users holding memories or events whose id starts with ``prefix`` and has no ``/``
        after it (a tenant's users are ``<tenant>/<id>``: under ``"acme/"`` its users, under ``""``
        the plain ids), by id, with their counts and first and last activity
        (:mod:`mnemo.store.users`)."""
