"""Finding the memories to inject: embed the query, search the scope, keep the confident ones,
all inside a time budget. Retrieval fails open: a slow or broken embedder or store means
"no memories this time", never a failed chat."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from mnemo.embedding import Embedder
from mnemo.models import Scope, ScoredMemory
from mnemo.store import MemoryStore

logger = logging.getLogger(__name__)


@dataclass
class Retrieval:
    memories: list[ScoredMemory] = field(default_factory=list)
    failure: str | None = None  # why retrieval was skipped, when it was
    elapsed_ms: float = 0.0


class Retriever:
    def __init__(self, embedder: Embedder, store: MemoryStore) -> None:
        self.embedder = embedder
        self.store = store

    async def search(self, scope: Scope, query: str, *, limit: int, threshold: float) -> list[ScoredMemory]:
        """Hybrid search: meaning (dense, at least ``threshold`` cosine similarity) fused with keywords."""
        vector = await self.embedder.embed_query(query)
        return await self.store.search(scope, vector, limit=limit, query_text=query, score_threshold=threshold)

    async def retrieve(self, scope: Scope, query: str, *, limit: int, threshold: float, timeout_s: float) -> Retrieval:
        started = time.perf_counter()
        result = Retrieval()
        if query:
            try:
                async with asyncio.timeout(timeout_s):  # no extra task, unlike wait_for
                    result.memories = await self.search(scope, query, limit=limit, threshold=threshold)
            except TimeoutError:
                result.failure = "timeout"
            except Exception as exc:  # fail open on anything: a chat must not fail because memory did
                result.failure = type(exc).__name__
                logger.warning("retrieval failed, answering without memory: %s", exc)
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        if result.failure == "timeout":
            logger.warning("retrieval exceeded its %.0f ms budget, answering without memory", timeout_s * 1000)
        return result
