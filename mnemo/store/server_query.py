"""qdrant-client plumbing shared by the server store: filter translation, error mapping,
hybrid queries, and the keyword-vector upgrade of collections made before hybrid search."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ApiException

from mnemo.errors import StoreError
from mnemo.models import text_hash
from mnemo.store import keywords as kw
from mnemo.store import payload as pl
from mnemo.store.hybrid import HybridOptions

logger = logging.getLogger(__name__)

PAGE = 1000
SPARSE_PARAMS = models.SparseVectorParams(modifier=models.Modifier.IDF)


def server_filter(conditions: Sequence[pl.Condition]) -> models.Filter:
    return models.Filter(must=[_server_condition(condition) for condition in conditions])


def _server_condition(condition: pl.Condition) -> models.Condition:
    if isinstance(condition, pl.Match):
        return models.FieldCondition(key=condition.key, match=models.MatchValue(value=condition.value))
    if isinstance(condition, pl.MatchAnyOf):
        return models.FieldCondition(key=condition.key, match=models.MatchAny(any=list(condition.values)))
    if isinstance(condition, pl.Between):
        span = models.Range(gt=condition.gt, gte=condition.gte, lt=condition.lt, lte=condition.lte)
        return models.FieldCondition(key=condition.key, range=span)
    return models.IsNullCondition(is_null=models.PayloadField(key=condition.key))


@contextmanager
def server_errors(action: str) -> Iterator[None]:
    """The one place client failures (HTTP, API, local-mode) become StoreError."""
    try:
        yield
    except (ApiException, httpx.HTTPError, OSError, ValueError, RuntimeError) as exc:
        raise StoreError(f"qdrant {action} failed: {exc}") from exc


def sparse_vector(vector: qe.SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def document_sparse(payload: Mapping[str, Any]) -> models.SparseVector:
    return sparse_vector(kw.document_vector(kw.keyword_text(pl.memory_from_payload(payload))))


def fusion_query(options: HybridOptions) -> models.RrfQuery | models.FusionQuery:
    if options.fusion == "dbsf":
        return models.FusionQuery(fusion=models.Fusion.DBSF)
    return models.RrfQuery(rrf=models.Rrf(k=options.rrf_k, weights=options.weights))


def hybrid_prefetches(
    vector: list[float], sparse: models.SparseVector, where: models.Filter, limit: int, threshold: float | None
) -> list[models.Prefetch]:
    return [
        models.Prefetch(query=vector, using=pl.DENSE_VECTOR, filter=where, limit=limit, score_threshold=threshold),
        models.Prefetch(query=sparse, using=kw.SPARSE_VECTOR, filter=where, limit=limit),
    ]


async def hash_texts(client: AsyncQdrantClient, name: str) -> None:
    """Give memories stored before ``text_hash`` existed their hash (once: only points lacking it)."""
    lacking = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=pl.TEXT_HASH))])
    count, offset = 0, None
    while True:
        page, offset = await client.scroll(name, lacking, limit=PAGE, offset=offset, with_payload=True)
        for record in page:
            text = (record.payload or {}).get("text")
            if isinstance(text, str):
                await client.set_payload(name, {pl.TEXT_HASH: text_hash(text)}, points=[record.id])
                count += 1
        if offset is None:
            break
    if count:
        logger.info("hashed the texts of %d memories stored before verbatim-twin lookups", count)


async def stamp_expiry(client: AsyncQdrantClient, name: str) -> None:
    """Give memories stored before expiry existed "never expires" (once: only points lacking it),
    so the read filter ``expires_ts > now`` keeps finding them."""
    lacking = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=pl.EXPIRES_TS))])
    count = 0
    while True:
        # Re-scrolled from the start: each page stamped leaves the filter.
        page, _ = await client.scroll(name, lacking, limit=PAGE, with_payload=False)
        if not page:
            break
        await client.set_payload(name, {pl.EXPIRES_TS: pl.VALID_TS}, points=[record.id for record in page])
        count += len(page)
    if count:
        logger.info("stamped %d memories stored before retention as never expiring", count)


async def index_keywords(client: AsyncQdrantClient, name: str, sparse_vectors: object) -> bool:
    """Add the keyword vector to a collection made before hybrid search and index what it holds;
    return whether the collection has keywords now. qdrant-client's local mode cannot add a vector
    to an existing collection: such a store keeps working with dense search only."""
    if not (isinstance(sparse_vectors, dict) and kw.SPARSE_VECTOR in sparse_vectors):
        try:
            await client.update_collection(name, sparse_vectors_config={kw.SPARSE_VECTOR: SPARSE_PARAMS})
        except (ApiException, ValueError) as exc:
            logger.warning("collection %s has no keyword vector and cannot get one (%s): dense search only", name, exc)
            return False
    lacking = models.Filter(must_not=[models.HasVectorCondition(has_vector=kw.SPARSE_VECTOR)])
    count, offset = 0, None
    while True:
        # Paged by offset, not re-scrolled from the start: a text of stop words alone gets an empty
        # keyword vector, which may still count as missing, and must not loop forever.
        page, offset = await client.scroll(name, lacking, limit=PAGE, offset=offset, with_payload=True)
        if page:
            updates = [
                models.PointVectors(id=record.id, vector={kw.SPARSE_VECTOR: document_sparse(record.payload or {})})
                for record in page
            ]
            await client.update_vectors(name, updates)
            count += len(page)
        if offset is None:
            break
    if count:
        logger.info("indexed keywords of %d memories stored before hybrid search", count)
    return True
