"""The server backend: a Qdrant server through AsyncQdrantClient (or its local mode, for tests).

Two collections, ``{collection}`` (memories, named dense vector) and ``{collection}_events``.
The embedder identity lives in the memories collection's metadata.
"""

from __future__ import annotations

import builtins
import logging
import os
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from mnemo.config import StoreSettings
from mnemo.errors import ConfigError, StoreError, StoreMismatchError
from mnemo.models import Memory, MemoryEvent, Scope, ScoredMemory, utcnow
from mnemo.store import keywords as kw
from mnemo.store import payload as pl
from mnemo.store import users
from mnemo.store.base import StoreIdentity
from mnemo.store.hybrid import HybridOptions, ranked_hits, wants_keywords
from mnemo.store.server_query import (
    PAGE,
    SPARSE_PARAMS,
    document_sparse,
    fusion_query,
    hash_texts,
    hybrid_prefetches,
    index_keywords,
    server_errors,
    server_filter,
    sparse_vector,
    stamp_expiry,
)

logger = logging.getLogger(__name__)

_KEYWORD = models.PayloadSchemaType.KEYWORD
_FLOAT = models.PayloadSchemaType.FLOAT
_TENANT = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
_MEMORY_INDEXES: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    "user_id": _TENANT,
    "agent_id": _KEYWORD,
    "session_id": _KEYWORD,
    "memory_id": _KEYWORD,
    "created_ts": _FLOAT,
    "invalid_ts": _FLOAT,
    pl.TEXT_HASH: _KEYWORD,
    pl.EXPIRES_TS: _FLOAT,
}
_EVENT_INDEXES: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    "user_id": _TENANT,
    "memory_id": _KEYWORD,
    "created_ts": _FLOAT,
}


def _created_ts(points: list[models.ScoredPoint]) -> float | None:
    stamp = (points[0].payload or {}).get("created_ts") if points else None
    return float(stamp) if stamp is not None else None


class QdrantServerMemoryStore:
    def __init__(self, settings: StoreSettings, identity: StoreIdentity, options: HybridOptions | None = None) -> None:
        self._settings = settings
        self._identity = identity
        self._options = options or HybridOptions()
        self._keywords = True
        self._memories_name = settings.collection
        self._events_name = f"{settings.collection}_events"
        self._client_or_none: AsyncQdrantClient | None = None

    @property
    def _where(self) -> str:
        return f"{self._settings.url or self._settings.path} (collection {self._memories_name!r})"

    async def open(self) -> None:
        self._client_or_none = self._build_client()
        try:
            with server_errors("open"):
                await self._open_memories()
                await self._open_collection(
                    self._events_name, models.VectorParams(size=1, distance=models.Distance.DOT)
                )
                await self._create_indexes(self._memories_name, _MEMORY_INDEXES)
                await self._create_indexes(self._events_name, _EVENT_INDEXES)
        except BaseException:
            await self.close()
            raise

    def _build_client(self) -> AsyncQdrantClient:
        if self._settings.url:
            # The client's own version check runs a sync request in a daemon thread and reports by warning.
            return AsyncQdrantClient(url=self._settings.url, api_key=self._api_key(), check_compatibility=False)
        # Local mode locks its folder (one process per path, like qdrant-edge). When the lock is refused
        # the half-built client leaks its lock file; it is released, quietly, as the exception is dropped.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                return AsyncQdrantClient(path=self._settings.path)
            except RuntimeError as exc:
                reason = str(exc)
        raise StoreError(f"the local Qdrant store at {self._settings.path} is in use by another process ({reason})")

    def _api_key(self) -> str | None:
        name = self._settings.api_key_env
        if not name:
            return None
        key = os.environ.get(name)
        if not key:
            raise ConfigError(f"store.api_key_env names {name}, but that environment variable is not set")
        return key

    async def _open_memories(self) -> None:
        dense = models.VectorParams(size=self._identity.dimension, distance=models.Distance.COSINE)
        if not await self._open_collection(self._memories_name, {pl.DENSE_VECTOR: dense}):
            return
        info = await self._client.get_collection(self._memories_name)
        self._keywords = await index_keywords(self._client, self._memories_name, info.config.params.sparse_vectors)
        await hash_texts(self._client, self._memories_name)
        await stamp_expiry(self._client, self._memories_name)
        stored = pl.identity_from_record(info.config.metadata)
        if stored is not None:
            pl.check_identity(stored, self._identity, self._where)
            return
        # No recorded identity (a server that drops collection metadata, or an older store): judge by
        # the vector size, and record the identity once it fits.
        pl.check_identity(self._identity_from_vectors(info.config.params.vectors), self._identity, self._where)
        await self._client.update_collection(self._memories_name, metadata=pl.identity_record(self._identity))

    def _identity_from_vectors(self, vectors: Any) -> StoreIdentity:
        params = vectors.get(pl.DENSE_VECTOR) if isinstance(vectors, dict) else None
        if not isinstance(params, models.VectorParams):
            raise StoreMismatchError(
                f"the collection at {self._where} has no {pl.DENSE_VECTOR!r} vector: not a Mnemo store"
            )
        if params.size != self._identity.dimension:
            return StoreIdentity(embedder_model="(unrecorded)", dimension=params.size)
        return self._identity

    async def _open_collection(self, name: str, vectors: models.VectorParams | dict[str, models.VectorParams]) -> bool:
        """Create the collection if missing; return whether it existed already."""
        if await self._client.collection_exists(name):
            return True
        metadata = pl.identity_record(self._identity) if name == self._memories_name else None
        sparse = {kw.SPARSE_VECTOR: SPARSE_PARAMS} if name == self._memories_name else None
        await self._client.create_collection(
            name, vectors_config=vectors, sparse_vectors_config=sparse, metadata=metadata
        )
        return False

    async def _create_indexes(
        self, name: str, indexes: dict[str, models.PayloadSchemaType | models.KeywordIndexParams]
    ) -> None:
        # Re-creating an existing index is a no-op on the server, so new indexes reach old collections.
        with warnings.catch_warnings():
            # Local mode (tests) has no payload indexes and says so once per process.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for field, schema in indexes.items():
                await self._client.create_payload_index(name, field, field_schema=schema)

    @property
    def _client(self) -> AsyncQdrantClient:
        if self._client_or_none is None:
            raise StoreError("the memory store is not open")
        return self._client_or_none

    async def close(self) -> None:
        client, self._client_or_none = self._client_or_none, None
        if client is not None:
            await client.close()

    def vector_cache_usage(self) -> tuple[int, int] | None:
        return None  # the Qdrant server indexes vectors itself

    async def ping(self) -> None:
        with server_errors("ping"):
            await self._client.get_collection(self._memories_name)

    async def upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        if len(memories) != len(vectors):
            raise StoreError(f"upsert got {len(memories)} memories but {len(vectors)} vectors")
        points = []
        for memory, vector in zip(memories, vectors, strict=True):
            pl.check_vector(vector, self._identity)
            payload = pl.memory_payload(memory)
            vectors_of: dict[str, models.Vector] = {pl.DENSE_VECTOR: list(vector)}
            if self._keywords:
                vectors_of[kw.SPARSE_VECTOR] = document_sparse(payload)
            point = models.PointStruct(id=pl.point_id(memory.id), vector=vectors_of, payload=payload)
            points.append(point)
        if points:
            with server_errors("upsert"):
                await self._client.upsert(self._memories_name, points=points)

    async def invalidate(self, memory_id: str, invalid_at: datetime, superseded_by: str | None) -> None:
        pid = pl.point_id(memory_id)
        with server_errors("invalidate"):
            # A memory erased while a job was in flight is gone for good: nothing to invalidate.
            if not await self._client.retrieve(self._memories_name, [pid], with_payload=False):
                return
            fields = pl.invalidation_payload(invalid_at, superseded_by)
            await self._client.set_payload(self._memories_name, payload=fields, points=[pid])

    async def get(self, memory_id: str) -> Memory | None:
        with server_errors("get"):
            records = await self._client.retrieve(self._memories_name, [pl.point_id(memory_id)])
        if not records or pl.is_expired(records[0].payload or {}):
            return None  # an expired memory is gone, swept or not (mnemo.retention)
        return pl.memory_from_payload(records[0].payload or {})

    async def set_expiry(self, memory_id: str, expires_at: datetime | None) -> None:
        pid = pl.point_id(memory_id)
        with server_errors("set_expiry"):
            if await self._client.retrieve(self._memories_name, [pid], with_payload=False):
                await self._client.set_payload(self._memories_name, payload=pl.expiry_payload(expires_at), points=[pid])

    async def expired(self, moment: datetime, *, limit: int) -> builtins.list[Memory]:
        with server_errors("expired"):
            page, _ = await self._client.scroll(
                self._memories_name, server_filter(pl.expired_conditions(moment)), limit=limit, with_payload=True
            )
        return [pl.memory_from_payload(record.payload or {}) for record in page]

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
        pl.check_vector(vector, self._identity)
        where = server_filter(pl.search_conditions(scope, include_invalidated))
        options = self._options
        keywords = self._keywords and wants_keywords(options, query_text)
        sparse = sparse_vector(kw.query_vector(query_text)) if query_text and keywords else None
        if sparse is not None and not sparse.indices:
            sparse = None  # nothing but stop words: dense only
        with server_errors("search"):
            points = await self._query(list(vector), sparse, where, limit, score_threshold)
        found = ((pl.memory_from_payload(p.payload or {}), p.score) for p in points)
        return ranked_hits(found, options, fused=sparse is not None, now=utcnow(), limit=limit, query_text=query_text)

    async def _query(
        self,
        vector: list[float],
        sparse: models.SparseVector | None,
        where: models.Filter,
        limit: int,
        threshold: float | None,
    ) -> list[models.ScoredPoint]:
        fetch = self._options.fetch_limit(limit)
        if sparse is None:
            response = await self._client.query_points(
                self._memories_name,
                query=vector,
                using=pl.DENSE_VECTOR,
                query_filter=where,
                limit=fetch,
                score_threshold=threshold,
            )
        else:
            prefetch = hybrid_prefetches(vector, sparse, where, self._options.prefetch_limit(limit), threshold)
            query = fusion_query(self._options)
            response = await self._client.query_points(self._memories_name, prefetch=prefetch, query=query, limit=fetch)
        return response.points

    async def find_texts(self, scope: Scope, texts: Sequence[str]) -> builtins.list[Memory]:
        if not texts:
            return []
        with server_errors("find_texts"):
            records = await self._scroll_all(self._memories_name, server_filter(pl.text_conditions(scope, texts)))
        return [pl.memory_from_payload(record.payload or {}) for record in records]

    async def _scroll_all(self, name: str, where: models.Filter) -> builtins.list[models.Record]:
        records, offset = await self._client.scroll(name, where, limit=PAGE)
        while offset is not None:
            page, offset = await self._client.scroll(name, where, limit=PAGE, offset=offset)
            records += page
        return records

    async def add_events(self, events: Sequence[MemoryEvent]) -> None:
        points = [models.PointStruct(id=pl.point_id(e.id), vector=[1.0], payload=pl.event_payload(e)) for e in events]
        if points:
            with server_errors("add_events"):
                # Insert-only: a retried job re-adding an event never rewrites history.
                await self._client.upsert(self._events_name, points=points, update_mode=models.UpdateMode.INSERT_ONLY)

    async def list_events(self, user_id: str, *, memory_id: str | None = None) -> list[MemoryEvent]:
        with server_errors("list_events"):
            records = await self._scroll_all(self._events_name, server_filter(pl.user_conditions(user_id, memory_id)))
        return pl.sort_events([pl.event_from_payload(record.payload or {}) for record in records])

    async def delete_user(self, user_id: str) -> tuple[int, int]:
        where = server_filter(pl.user_conditions(user_id))
        counts = []
        with server_errors("delete_user"):
            for name in (self._memories_name, self._events_name):
                counts.append((await self._client.count(name, where, exact=True)).count)
                await self._client.delete(name, models.FilterSelector(filter=where))
        logger.info("erased user: %d memories, %d events", counts[0], counts[1])
        return counts[0], counts[1]

    async def delete_memories(self, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            selector = models.PointIdsList(points=[pl.point_id(memory_id) for memory_id in memory_ids])
            their_events = server_filter([pl.MatchAnyOf("memory_id", tuple(memory_ids))])
            with server_errors("delete_memories"):
                await self._client.delete(self._memories_name, selector)
                await self._client.delete(self._events_name, models.FilterSelector(filter=their_events))

    async def list_users(self, prefix: str = "", *, limit: int = 100, offset: int = 0) -> users.UserListing:
        with server_errors("list_users"):
            counts = users.UserCounts(
                memories=await self._user_facet(self._memories_name, prefix),
                current=await self._user_facet(self._memories_name, prefix, pl.Between("invalid_ts", gte=pl.VALID_TS)),
                events=await self._user_facet(self._events_name, prefix),
            )
            ids = users.listed_ids(prefix, counts)
            page = ids[offset : offset + limit]
            memories = await self._user_stamps(self._memories_name, page)
            events = await self._user_stamps(self._events_name, page)
        summaries = [users.summary(u, counts, [*memories[u], *events[u]]) for u in page]
        return users.UserListing(summaries, len(ids), users.is_complete(counts))

    async def _user_facet(self, name: str, prefix: str, *conditions: pl.Condition) -> dict[str, int]:
        where = server_filter(conditions)
        if prefix:
            under = models.FieldCondition(key="user_id", match=models.MatchPrefix(prefix=prefix))
            where = models.Filter(must=[where, under])
        found = await self._client.facet(name, "user_id", facet_filter=where, limit=users.USER_SCAN_LIMIT, exact=True)
        return {str(hit.value): hit.count for hit in found.hits}

    async def _user_stamps(
        self, name: str, user_ids: builtins.list[str]
    ) -> dict[str, tuple[float | None, float | None]]:
        """Each user's oldest and newest ``created_ts`` in the collection, in one batch of queries."""
        if not user_ids:
            return {}
        requests = [
            models.QueryRequest(
                query=models.OrderByQuery(order_by=models.OrderBy(key="created_ts", direction=direction)),
                filter=server_filter(pl.user_conditions(user_id)),
                limit=1,
                with_payload=["created_ts"],
            )
            for user_id in user_ids
            for direction in (models.Direction.ASC, models.Direction.DESC)
        ]
        answers = await self._client.query_batch_points(name, requests)
        stamps = [_created_ts(answer.points) for answer in answers]
        return {user_id: (stamps[2 * i], stamps[2 * i + 1]) for i, user_id in enumerate(user_ids)}

    # Kept last in the class: below this def, the name `list` means the method, not the builtin.
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
    ) -> builtins.list[Memory]:
        conditions = pl.list_conditions(
            scope,
            include_invalidated=include_invalidated,
            as_of=as_of,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata,
        )
        newest_first = models.OrderByQuery(order_by=models.OrderBy(key="created_ts", direction=models.Direction.DESC))
        with server_errors("list"):
            response = await self._client.query_points(
                self._memories_name,
                query=newest_first,
                query_filter=server_filter(conditions),
                limit=limit,
                offset=offset,
            )
        return [pl.memory_from_payload(p.payload or {}) for p in response.points]
