"""Qdrant Edge plumbing shared by the edge store: filter translation, error mapping, paging,
fusion, and the keyword-vector upgrade of shards made before hybrid search."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import qdrant_edge as qe

from mnemo.errors import StoreError
from mnemo.models import text_hash
from mnemo.store import keywords as kw
from mnemo.store import payload as pl
from mnemo.store.hybrid import HybridOptions

logger = logging.getLogger(__name__)

PAGE = 1000


def edge_filter(conditions: Sequence[pl.Condition]) -> qe.Filter:
    return qe.Filter(must=[_edge_condition(condition) for condition in conditions])


def _edge_condition(condition: pl.Condition) -> qe.FieldCondition | qe.IsNullCondition:
    if isinstance(condition, pl.Match):
        if isinstance(condition.value, bool):
            raise StoreError("qdrant-edge cannot match boolean payload values")
        return qe.FieldCondition(condition.key, match=qe.MatchValue(condition.value))
    if isinstance(condition, pl.MatchAnyOf):
        return qe.FieldCondition(condition.key, match=qe.MatchAny(list(condition.values)))
    if isinstance(condition, pl.Between):
        span = qe.RangeFloat(gte=condition.gte, gt=condition.gt, lte=condition.lte, lt=condition.lt)
        return qe.FieldCondition(condition.key, range=span)
    return qe.IsNullCondition(condition.key)


@contextmanager
def edge_errors(action: str) -> Iterator[None]:
    """qdrant-edge raises bare ``Exception``; callers see StoreError, with the cause attached."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"qdrant-edge {action} failed: {exc}") from exc


def edge_fusion(options: HybridOptions) -> qe.Fusion:
    # The stubs type the nested Rrf/Dbsf classes apart from Fusion, which is what query= accepts.
    if options.fusion == "dbsf":
        return cast(qe.Fusion, qe.Fusion.Dbsf())
    return cast(qe.Fusion, qe.Fusion.Rrf(k=options.rrf_k, weights=options.weights))


def search_request(
    vector: list[float],
    sparse: qe.SparseVector | None,
    where: qe.Filter,
    limit: int,
    threshold: float | None,
    options: HybridOptions,
    nearest: Collection[str] | None = None,
) -> qe.QueryRequest:
    """Dense alone without keywords; else dense and BM25 prefetches, each filtered, fused.
    ``nearest``: the dense side scores only these points (the dense cache's candidates)."""
    dense = qe.Query.Nearest(vector, using=pl.DENSE_VECTOR)
    dense_where = where if nearest is None else qe.Filter(must=[*(where.must or []), qe.HasIdCondition(set(nearest))])
    fetch = options.fetch_limit(limit)
    if sparse is None:
        return qe.QueryRequest(
            limit=fetch, query=dense, filter=dense_where, with_payload=True, score_threshold=threshold
        )
    n = options.prefetch_limit(limit)
    prefetches = [
        qe.Prefetch(n, query=dense, filter=dense_where, score_threshold=threshold),
        qe.Prefetch(n, query=qe.Query.Nearest(sparse, using=kw.SPARSE_VECTOR), filter=where),
    ]
    return qe.QueryRequest(limit=fetch, prefetches=prefetches, query=edge_fusion(options), with_payload=True)


def index_keywords(shard: qe.EdgeShard) -> None:
    """Give the shard its keyword vector, and memories written before it existed their keywords.

    Creating the sparse vector again is a no-op, and only points lacking it are rewritten, so an
    upgrade interrupted half-way finishes on the next open."""
    shard.update(qe.UpdateOperation.create_sparse_vector(kw.SPARSE_VECTOR, modifier=qe.Modifier.Idf))
    lacking = filter_scroll(shard, qe.Filter(must_not=[qe.HasVectorCondition(kw.SPARSE_VECTOR)]))
    for start in range(0, len(lacking), PAGE):
        page = lacking[start : start + PAGE]
        lines = [kw.keyword_text(pl.memory_from_payload(record.payload or {})) for record in page]
        updates = [
            qe.PointVectors(record.id, {kw.SPARSE_VECTOR: kw.document_vector(line)})
            for record, line in zip(page, lines, strict=True)
        ]
        shard.update(qe.UpdateOperation.update_vectors(updates))
    if lacking:
        logger.info("indexed keywords of %d memories stored before hybrid search", len(lacking))


def hash_texts(shard: qe.EdgeShard) -> None:
    """Give memories stored before ``text_hash`` existed their hash (once: only points lacking it)."""
    lacking = filter_scroll(shard, qe.Filter(must=[qe.IsEmptyCondition(pl.TEXT_HASH)]))
    for record in lacking:
        text = (record.payload or {}).get("text")
        if isinstance(text, str):
            shard.update(qe.UpdateOperation.set_payload([record.id], {pl.TEXT_HASH: text_hash(text)}))
    if lacking:
        logger.info("hashed the texts of %d memories stored before verbatim-twin lookups", len(lacking))


def stamp_expiry(shard: qe.EdgeShard) -> None:
    """Give memories stored before expiry existed "never expires" (once: only points lacking it),
    so the read filter ``expires_ts > now`` keeps finding them."""
    lacking = filter_scroll(shard, qe.Filter(must=[qe.IsEmptyCondition(pl.EXPIRES_TS)]))
    for start in range(0, len(lacking), PAGE):
        ids = [record.id for record in lacking[start : start + PAGE]]
        shard.update(qe.UpdateOperation.set_payload(ids, {pl.EXPIRES_TS: pl.VALID_TS}))
    if lacking:
        logger.info("stamped %d memories stored before retention as never expiring", len(lacking))


def filter_scroll(shard: qe.EdgeShard, where: qe.Filter) -> list[qe.Record]:
    records: list[qe.Record] = []
    offset: qe.PointId | None = None
    with edge_errors("scroll"):
        while True:
            page, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=PAGE, filter=where, with_payload=True))
            records += page
            if offset is None:
                return records
