"""The embedded backend: Qdrant Edge shards in the data directory, no server.

EdgeShard calls are synchronous, in-process and sub-millisecond for per-user filtered
queries, so they run directly on the event loop. Durability comes from the shard's WAL: when
``update`` returns, the change is in the mmapped WAL (the OS page cache, no fsync), so it
survives a crash or ``kill -9`` of the process. ``flush`` (msync + fsync) is what guards against
power loss and lets the WAL drop old segments; it would cost ~60x an upsert, so it runs on close
and every 30 s after writes, in a thread (``mnemo.store.edge_checkpoint``).
``optimize`` (a blocking HNSW build) is never called: filtered search is fast without it, and it
holds the GIL for its whole run. Erasing rebuilds a shard without the erased points instead
(``mnemo.store.edge_compaction``), so their text leaves the disk.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import qdrant_edge as qe

from mnemo.errors import StoreError
from mnemo.models import Memory, MemoryEvent, Scope, ScoredMemory, utcnow
from mnemo.store import edge_checkpoint, edge_pages, users
from mnemo.store import edge_compaction as compaction
from mnemo.store import keywords as kw
from mnemo.store import payload as pl
from mnemo.store.base import StoreIdentity
from mnemo.store.dense_cache import DenseCache, Row, UserVectors
from mnemo.store.edge_query import (
    PAGE,
    edge_errors,
    edge_filter,
    filter_scroll,
    hash_texts,
    index_keywords,
    search_request,
    stamp_expiry,
)
from mnemo.store.hybrid import HybridOptions, ranked_hits, wants_keywords

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


def _keyword(is_tenant: bool = False) -> qe.KeywordIndexParams:
    return qe.KeywordIndexParams(is_tenant=True) if is_tenant else qe.KeywordIndexParams()


def _memory_indexes() -> dict[str, qe.PayloadSchemaParams]:
    # No index on the `valid` bool: qdrant-edge 0.9 sends MatchValue(True) as the integer 1,
    # which never matches a boolean, so validity is filtered through the invalid_ts range.
    return {
        "user_id": _keyword(is_tenant=True),
        "agent_id": _keyword(),
        "session_id": _keyword(),
        "memory_id": _keyword(),
        "created_ts": qe.FloatIndexParams(),
        "invalid_ts": qe.FloatIndexParams(),
        pl.TEXT_HASH: _keyword(),
        pl.EXPIRES_TS: qe.FloatIndexParams(),
    }


def _event_indexes() -> dict[str, qe.PayloadSchemaParams]:
    return {"user_id": _keyword(is_tenant=True), "memory_id": _keyword(), "created_ts": qe.FloatIndexParams()}


def _prepare_shard(name: str, shard: qe.EdgeShard) -> None:
    """Payload indexes, and for memories the keyword vector: on a new shard, or new ones on an
    old shard after an upgrade (creating an existing one is a cheap no-op)."""
    for field, schema in (_memory_indexes() if name == "memories" else _event_indexes()).items():
        shard.update(qe.UpdateOperation.create_field_index(field, schema))
    if name == "memories":
        index_keywords(shard)
        hash_texts(shard)
        stamp_expiry(shard)


# The shard's search pool runs per-segment reads in parallel, and a shard that is never
# optimised holds one segment, so a pool only adds hand-offs between threads: one thread took a
# search from 2.0 to 0.6-0.9 ms of CPU on a 2-vCPU host, at the same or better latency.
SEARCH_THREADS = 1
# Points per page while a user's vectors are read into the dense cache, the event loop free between.
VECTOR_PAGE = 256
OLDEST_NEWEST = (qe.Direction.Asc, qe.Direction.Desc)


def _row(point_id: str, payload: dict[str, Any]) -> Row:
    """What the dense cache filters on, read the way Edge's search filter reads it."""
    return Row(point_id, payload.get("agent_id") or "", float(payload.get("invalid_ts", 0.0)) >= pl.VALID_TS)


class EdgeMemoryStore:
    def __init__(
        self,
        path: Path,
        collection: str,
        identity: StoreIdentity,
        options: HybridOptions | None = None,
        dense_cache: DenseCache | None = None,
        checkpoint_s: float = edge_checkpoint.CHECKPOINT_S,
    ) -> None:
        self._dir = path / collection
        self._identity = identity
        self._options = options or HybridOptions()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._paths: dict[str, Path] = {}  # each shard's current directory (see edge_compaction)
        # Vectors are read from their files as searches need them (Cold). Edge's default placement
        # reads a shard's whole vector file into memory when it loads it, 32 MB a file even for
        # the events' 1-d vectors: a restart on 9,000 memories took 58 MB more than one on none.
        cold = qe.Memory.Cold
        dense = qe.EdgeVectorParams(size=identity.dimension, distance=qe.Distance.Cosine, memory=cold)
        # Events need no vector; a constant 1-d one keeps the shard a plain point store.
        self._vectors: dict[str, qe.EdgeVectorParams | dict[str, qe.EdgeVectorParams]] = {
            "memories": {pl.DENSE_VECTOR: dense},
            "events": qe.EdgeVectorParams(1, qe.Distance.Dot, memory=cold),
        }
        # While a shard is rebuilt, the writes it takes are also kept here, to replay on its copy.
        self._replays: dict[str, list[qe.UpdateOperation]] = {}
        self._erasures = 0
        self._compaction: asyncio.Task[None] | None = None
        self._checkpoints = edge_checkpoint.Checkpoints(self._dir, lambda: self._shards, checkpoint_s)
        # Heavy users' vectors in memory (mnemo.store.dense_cache); None searches through Edge only.
        self._dense = dense_cache
        self._loading: dict[str, asyncio.Task[None]] = {}

    async def open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._check_identity()
        current = compaction.current_directories(self._dir)
        try:
            for name in self._vectors:
                path = self._dir / current.get(name, name)
                for leftover in compaction.leftovers(self._dir, name, path.name):
                    compaction.remove(leftover)
                self._shards[name], self._paths[name] = self._load_shard(name, path), path
        except StoreError:
            for shard in self._shards.values():
                shard.close()
            self._shards = {}
            raise
        with edge_errors("index creation"):
            for name, shard in self._shards.items():
                _prepare_shard(name, shard)
        # Loading read the WAL and every index file in whole; only writes touch them from now on.
        edge_pages.release_write_only_pages(self._dir)
        if (self._dir / compaction.PENDING_MARKER).exists():
            logger.info("an erasure had not reached the disk before the store closed; rebuilding the store now")
            self._start_compaction()
        elif any(compaction.holds_vectors_in_memory(path) for path in self._paths.values()):
            # A shard written before vectors were Cold keeps its placement until it is rebuilt.
            logger.info("rebuilding the store so that its vectors are read from disk as needed")
            self._start_compaction(erasure=False)
        self._checkpoints.start()

    def _check_identity(self) -> None:
        record_path = self._dir / IDENTITY_FILE
        if record_path.exists():
            stored = pl.identity_from_record(json.loads(record_path.read_text(encoding="utf-8")))
            if stored is None:
                raise StoreError(f"{record_path} is not a valid store identity record")
            pl.check_identity(stored, self._identity, str(self._dir))
            return
        # Written before the shards exist, via a rename, so no shard is ever left without one.
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pl.identity_record(self._identity)), encoding="utf-8")
        os.replace(tmp, record_path)

    def _load_shard(self, name: str, path: Path) -> qe.EdgeShard:
        path.mkdir(exist_ok=True)
        config = qe.EdgeConfig(vectors=self._vectors[name], max_search_threads=SEARCH_THREADS)
        try:
            # With a config, load creates the shard in an empty directory and checks compatibility otherwise.
            return qe.EdgeShard.load(str(path), config)
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreError(
                    f"the memory store at {self._dir} is in use by another process "
                    "(qdrant-edge allows one process per data directory)"
                ) from exc
            raise StoreError(f"cannot open qdrant-edge shard {path}: {exc}") from exc

    async def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
        for task in list(self._loading.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._dense is not None:
            self._dense.clear()
        if self._compaction is not None:
            # An interrupted rebuild leaves the old shard whole and the marker in place: the
            # next open rebuilds again.
            self._compaction.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compaction
            self._compaction = None
        await self._checkpoints.stop()
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            with edge_errors("close"):
                try:
                    shard.flush()
                finally:
                    shard.close()

    def _shard(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is None:
            raise StoreError("the memory store is not open")
        return shard

    @property
    def _memories(self) -> qe.EdgeShard:
        return self._shard("memories")

    @property
    def _events(self) -> qe.EdgeShard:
        return self._shard("events")

    def _update(self, name: str, operation: qe.UpdateOperation) -> None:
        self._shard(name).update(operation)
        self._checkpoints.wrote(name)
        replay = self._replays.get(name)
        if replay is not None:
            replay.append(operation)

    async def wait_for_erasures(self) -> None:
        """Until the erasures made so far have reached the disk (or their rebuild failed)."""
        while self._compaction is not None and not self._compaction.done():
            await asyncio.shield(self._compaction)

    def vector_cache_usage(self) -> tuple[int, int] | None:
        return None if self._dense is None else self._dense.usage()

    async def wait_for_vector_loads(self) -> None:
        """Until the users' vectors being read into the dense cache are in it (or failed to load)."""
        while self._loading:
            await asyncio.wait(list(self._loading.values()))

    def _start_compaction(self, *, erasure: bool = True) -> None:
        """Rebuild the shards without their erased points, in the background (after any rebuild
        already running, as it may have copied them before they were erased). Not after an
        erasure (an upgrade's rebuild), no marker: if interrupted, the next open sees the same
        reason to rebuild."""
        self._erasures += 1
        if erasure:
            (self._dir / compaction.PENDING_MARKER).touch()
        if self._compaction is None or self._compaction.done():
            self._compaction = asyncio.get_running_loop().create_task(self._compact())

    async def _compact(self) -> None:
        while True:
            erasures = self._erasures
            try:
                for name in self._vectors:
                    await self._rebuild(name)
            except (StoreError, OSError):
                logger.exception("could not rebuild the store; the next open tries again")
                return
            if erasures == self._erasures:
                (self._dir / compaction.PENDING_MARKER).unlink(missing_ok=True)
                return

    async def _rebuild(self, name: str) -> None:
        old, old_path = self._shard(name), self._paths[name]
        new_path = self._dir / compaction.new_directory_name(name)
        new = self._load_shard(name, new_path)
        # Writes go on into the old shard meanwhile; each is replayed on the copy, in order (upserts,
        # payload updates, insert-only events and deletions all give the same result applied twice).
        replay: list[qe.UpdateOperation] = []
        self._replays[name] = replay
        try:
            with edge_errors("rebuild"):
                _prepare_shard(name, new)
                copied = await compaction.copy_live_points(old, new)
            await asyncio.to_thread(compaction.fsync_tree, new_path)
            # No await from here until the new shard is the store's: no write can come in between.
            with edge_errors("rebuild"):
                for operation in replay:
                    new.update(operation)
            compaction.set_current_directory(self._dir, name, new_path.name)
        except BaseException:
            new.close()
            compaction.remove(new_path)
            raise
        finally:
            del self._replays[name]
        self._shards[name], self._paths[name] = new, new_path
        self._checkpoints.wrote(name)  # the copy and the replayed writes, until a flush acknowledges them
        try:
            await self._checkpoints.idle()  # a checkpoint may be flushing the old shard
        finally:
            with edge_errors("rebuild"):
                old.close()
        await asyncio.to_thread(compaction.remove, old_path)
        logger.info("rebuilt the %s shard (%d points kept)", name, copied)

    async def ping(self) -> None:
        with edge_errors("ping"):
            self._memories.info()
            self._events.info()

    async def upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        if len(memories) != len(vectors):
            raise StoreError(f"upsert got {len(memories)} memories but {len(vectors)} vectors")
        points, rows = [], []
        for memory, vector in zip(memories, vectors, strict=True):
            pl.check_vector(vector, self._identity)
            keywords = kw.document_vector(kw.keyword_text(memory))
            vectors_of: dict[str, qe.NamedVector] = {pl.DENSE_VECTOR: list(vector), kw.SPARSE_VECTOR: keywords}
            pid, payload = pl.point_id(memory.id), pl.memory_payload(memory)
            points.append(qe.Point(pid, vectors_of, payload))
            if self._dense is not None:
                rows.append((memory.user_id, _row(pid, payload), vector))
        if points:
            with edge_errors("upsert"):
                self._update("memories", qe.UpdateOperation.upsert_points(points))
            if self._dense is not None:
                for user_id, row, vector in rows:
                    self._dense.put(user_id, row, vector)

    async def invalidate(self, memory_id: str, invalid_at: datetime, superseded_by: str | None) -> None:
        pid = pl.point_id(memory_id)
        with edge_errors("invalidate"):
            # A memory erased while a job was in flight is gone for good: nothing to invalidate.
            if not self._memories.retrieve([pid], False, False):
                return
            self._update(
                "memories", qe.UpdateOperation.set_payload([pid], pl.invalidation_payload(invalid_at, superseded_by))
            )
        if self._dense is not None:
            self._dense.invalidate(pid)

    async def get(self, memory_id: str) -> Memory | None:
        with edge_errors("get"):
            records = self._memories.retrieve([pl.point_id(memory_id)], True, False)
        if not records or pl.is_expired(records[0].payload or {}):
            return None  # an expired memory is gone, swept or not (mnemo.retention)
        return pl.memory_from_payload(records[0].payload or {})

    async def set_expiry(self, memory_id: str, expires_at: datetime | None) -> None:
        pid = pl.point_id(memory_id)
        with edge_errors("set_expiry"):
            if self._memories.retrieve([pid], False, False):
                self._update("memories", qe.UpdateOperation.set_payload([pid], pl.expiry_payload(expires_at)))

    async def expired(self, moment: datetime, *, limit: int) -> builtins.list[Memory]:
        where = edge_filter(pl.expired_conditions(moment))
        with edge_errors("expired"):
            page, _ = self._memories.scroll(qe.ScrollRequest(limit=limit, filter=where, with_payload=True))
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
        options = self._options
        sparse = kw.query_vector(query_text) if query_text and wants_keywords(options, query_text) else None
        if sparse is not None and not sparse.indices:
            sparse = None  # nothing but stop words: by meaning alone
        where = edge_filter(pl.search_conditions(scope, include_invalidated))
        count = options.prefetch_limit(limit) if sparse is not None else options.fetch_limit(limit)
        nearest = self._nearest(scope, vector, count, include_invalidated)
        request = search_request(list(vector), sparse, where, limit, score_threshold, options, nearest)
        with edge_errors("search"):
            points = self._memories.query(request)
        found = ((pl.memory_from_payload(p.payload or {}), p.score) for p in points)
        return ranked_hits(found, options, fused=sparse is not None, now=utcnow(), limit=limit, query_text=query_text)

    def _nearest(
        self, scope: Scope, vector: Sequence[float], count: int, include_invalidated: bool
    ) -> builtins.list[str] | None:
        """The point ids of the user's nearest memories from the dense cache, or None to let Edge
        scan them (no cache, or the user's vectors are not in memory: then maybe start loading them)."""
        if self._dense is None:
            return None
        kept = self._dense.searched(scope.user_id)
        if kept is not None:
            return kept.nearest(vector, count, agent_id=scope.agent_id, include_invalidated=include_invalidated)
        if scope.user_id not in self._dense:
            # An estimate from the payload index: microseconds, where an exact count scans.
            user = edge_filter(pl.user_conditions(scope.user_id))
            with edge_errors("count"):
                held = self._memories.count(qe.CountRequest(exact=False, filter=user))
            if self._dense.worth_keeping(held):
                loading = self._load_vectors(scope.user_id, held)
                self._loading[scope.user_id] = asyncio.get_running_loop().create_task(loading)
        return None

    async def _load_vectors(self, user_id: str, memories: int) -> None:
        """Read a user's vectors into the dense cache a page at a time, searches and writes going on
        meanwhile: a write reaches the entry at once, and each page is read after the writes before it."""
        assert self._dense is not None
        vectors: UserVectors = self._dense.start(user_id, memories)
        user = edge_filter(pl.user_conditions(user_id))
        offset: qe.PointId | None = None
        try:
            while True:
                request = qe.ScrollRequest(
                    offset=offset,
                    limit=VECTOR_PAGE,
                    filter=user,
                    with_payload=["agent_id", "invalid_ts"],
                    with_vector=[pl.DENSE_VECTOR],
                )
                with edge_errors("scroll"):
                    page, offset = self._memories.scroll(request)
                for record in page:
                    dense = record.vector.get(pl.DENSE_VECTOR) if isinstance(record.vector, dict) else None
                    if isinstance(dense, list):  # the dense vector is a plain one (never a multi-vector)
                        vectors.put(_row(str(record.id), record.payload or {}), cast("list[float]", dense))
                if offset is None:
                    break
                await asyncio.sleep(0)
        except BaseException as exc:
            self._dense.abandon(user_id, vectors)
            if not isinstance(exc, StoreError):
                raise
            logger.exception("could not read a user's vectors into memory; searching them in the store")
            return
        finally:
            if self._loading.get(user_id) is asyncio.current_task():
                del self._loading[user_id]
        if self._dense.loaded(user_id, vectors):
            logger.info("keeping the vectors of a user holding %d memories in memory", len(vectors))

    def _forget_vectors(self, user_id: str) -> None:
        if (loading := self._loading.pop(user_id, None)) is not None:
            loading.cancel()
        if self._dense is not None:
            self._dense.drop(user_id)

    async def find_texts(self, scope: Scope, texts: Sequence[str]) -> builtins.list[Memory]:
        if not texts:
            return []
        records = filter_scroll(self._memories, edge_filter(pl.text_conditions(scope, texts)))
        return [pl.memory_from_payload(record.payload or {}) for record in records]

    async def add_events(self, events: Sequence[MemoryEvent]) -> None:
        points = [qe.Point(pl.point_id(event.id), [1.0], pl.event_payload(event)) for event in events]
        if points:
            with edge_errors("add_events"):
                # Insert-only: a retried job re-adding an event never rewrites history.
                self._update("events", qe.UpdateOperation.upsert_points(points, update_mode=qe.UpdateMode.InsertOnly))

    async def list_events(self, user_id: str, *, memory_id: str | None = None) -> list[MemoryEvent]:
        found = filter_scroll(self._events, edge_filter(pl.user_conditions(user_id, memory_id)))
        return pl.sort_events([pl.event_from_payload(record.payload or {}) for record in found])

    async def delete_user(self, user_id: str) -> tuple[int, int]:
        user = edge_filter(pl.user_conditions(user_id))
        counts = []
        with edge_errors("delete_user"):
            for name in ("memories", "events"):
                counts.append(self._shard(name).count(qe.CountRequest(exact=True, filter=user)))
                self._update(name, qe.UpdateOperation.delete_points_by_filter(user))
        self._forget_vectors(user_id)
        logger.info("erased user: %d memories, %d events", counts[0], counts[1])
        if any(counts):
            self._start_compaction()
        return counts[0], counts[1]

    async def delete_memories(self, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            their_events = edge_filter([pl.MatchAnyOf("memory_id", tuple(memory_ids))])
            with edge_errors("delete_memories"):
                self._update("memories", qe.UpdateOperation.delete_points([pl.point_id(i) for i in memory_ids]))
                self._update("events", qe.UpdateOperation.delete_points_by_filter(their_events))
            if self._dense is not None:
                self._dense.remove([pl.point_id(i) for i in memory_ids])
            self._start_compaction()

    async def list_users(self, prefix: str = "", *, limit: int = 100, offset: int = 0) -> users.UserListing:
        counts = users.UserCounts(
            memories=self._user_facet("memories", prefix),
            current=self._user_facet("memories", prefix, pl.Between("invalid_ts", gte=pl.VALID_TS)),
            events=self._user_facet("events", prefix),
        )
        ids = users.listed_ids(prefix, counts)
        page = []
        for user_id in ids[offset : offset + limit]:
            stamps = [self._user_stamp(name, user_id, way) for name in self._vectors for way in OLDEST_NEWEST]
            page.append(users.summary(user_id, counts, stamps))
            await asyncio.sleep(0)  # four indexed reads per user: let chats in between users
        return users.UserListing(page, len(ids), users.is_complete(counts))

    def _user_facet(self, name: str, prefix: str, *conditions: pl.Condition) -> dict[str, int]:
        """Points per user id under ``prefix`` (from the keyword index, not a scan)."""
        must = list(edge_filter(conditions).must or [])
        if prefix:
            must.append(qe.FieldCondition("user_id", match=qe.MatchPrefix(prefix)))
        where = qe.Filter(must=must) if must else None
        request = qe.FacetRequest("user_id", limit=users.USER_SCAN_LIMIT, exact=True, filter=where)
        with edge_errors("facet"):
            hits = self._shard(name).facet(request).hits
        return {str(hit.value): hit.count for hit in hits}

    def _user_stamp(self, name: str, user_id: str, direction: qe.Direction) -> float | None:
        """The epoch seconds of the user's oldest (Asc) or newest (Desc) point in the shard."""
        request = qe.QueryRequest(
            limit=1,
            query=qe.OrderBy("created_ts", direction),
            filter=edge_filter(pl.user_conditions(user_id)),
            with_payload=["created_ts"],
        )
        with edge_errors("list_users"):
            points = self._shard(name).query(request)
        stamp = (points[0].payload or {}).get("created_ts") if points else None
        return float(stamp) if stamp is not None else None

    def _newest(self, conditions: Sequence[pl.Condition], *, limit: int, offset: int) -> list[Memory]:
        request = qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=qe.OrderBy("created_ts", qe.Direction.Desc),
            filter=edge_filter(conditions),
            with_payload=True,
        )
        with edge_errors("list"):
            points = self._memories.query(request)
        return [pl.memory_from_payload(p.payload or {}) for p in points]

    def _newest_all(self, conditions: Sequence[pl.Condition]) -> Iterator[Memory]:
        offset = 0
        while page := self._newest(conditions, limit=PAGE, offset=offset):
            yield from page
            offset += len(page)

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
        # Boolean metadata cannot be matched by qdrant-edge (see _memory_indexes); those keys are checked here.
        flags = {key: value for key, value in (metadata or {}).items() if isinstance(value, bool)}
        rest = {key: value for key, value in (metadata or {}).items() if key not in flags}
        conditions = pl.list_conditions(
            scope,
            include_invalidated=include_invalidated,
            as_of=as_of,
            created_after=created_after,
            created_before=created_before,
            metadata=rest,
        )
        if not flags:
            return self._newest(conditions, limit=limit, offset=offset)
        matching = [m for m in self._newest_all(conditions) if all(m.metadata.get(k) is v for k, v in flags.items())]
        return matching[offset : offset + limit]
