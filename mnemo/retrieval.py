"""Finding the memories to inject: embed the query, search the scope, keep the confident ones,
within a time budget. Retrieval fails open: a stuck or broken embedder or store, or more load
than the budget allows, means "no memories this time", never a failed chat; ``failure`` says which."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mnemo import speakers
from mnemo.embedding import Embedder
from mnemo.errors import EmbedderOverloaded
from mnemo.models import Scope, ScoredMemory
from mnemo.patience import Patience
from mnemo.store import MemoryStore

logger = logging.getLogger(__name__)

# Retrieval's own failures (an exception's type name otherwise): a dependency showed no sign of
# life within the budget, or it was busy and the answer could not come within the ceiling.
STALLED = "timeout"
OVERLOADED = "overloaded"


@dataclass(frozen=True)
class Budget:
    """How long a chat waits for its memories: ``stall_s`` for a dependency that shows no sign of
    life (then it is taken to be down), ``ceiling_s`` in all, however busy the query embedder."""

    stall_s: float
    ceiling_s: float


@dataclass
class Retrieval:
    memories: list[ScoredMemory] = field(default_factory=list)
    failure: str | None = None  # why retrieval was skipped, when it was
    elapsed_ms: float = 0.0


class Retriever:
    def __init__(self, embedder: Embedder, store: MemoryStore, *, without_speaker_names: bool = True) -> None:
        self.embedder = embedder
        self.store = store
        self.without_speaker_names = without_speaker_names  # memory.search_without_speaker_names

    async def search(
        self, scope: Scope, query: str, *, limit: int, threshold: float, patience: Patience | None = None
    ) -> list[ScoredMemory]:
        """Hybrid search: meaning (dense, at least ``threshold`` cosine similarity) fused with keywords.
        ``patience``: told which dependency each step waits on (see ``retrieve``)."""
        found = await self._search(scope, query, query, limit, threshold, patience)
        content = self.content_query(query, found)
        if content is None:
            return found
        return await self._search(scope, query, content, limit, threshold, patience)

    async def _search(
        self, scope: Scope, query: str, meaning: str, limit: int, threshold: float, patience: Patience | None
    ) -> list[ScoredMemory]:
        """One search: ``meaning`` embedded for the dense side, ``query`` for keywords."""
        if patience is None:
            vector = await self.embedder.embed_query(meaning)
        else:
            patience.waiting_on(self.embedder.query_progress)
            vector = await self.embedder.embed_query(meaning, deadline=patience.deadline)
            patience.waiting_on(None)  # a search shows no progress: its start is all there is
        return await self.store.search(scope, vector, limit=limit, query_text=query, score_threshold=threshold)

    def content_query(self, query: str, found: list[ScoredMemory]) -> str | None:
        """What to search by meaning a second time when the query names speakers of the memories
        found: the query without their names (mnemo.speakers). Keywords and the speaker boost still
        read the query as asked."""
        return speakers.content_query(query, found) if self.without_speaker_names else None

    async def retrieve(self, scope: Scope, query: str, *, limit: int, threshold: float, budget: Budget) -> Retrieval:
        """``search`` within ``budget``. Queued behind other chats' queries in an embedder that keeps
        finishing them, a chat waits (up to the ceiling): that is load, not failure."""
        started = time.perf_counter()
        result = Retrieval()
        if query:
            patience = Patience(budget.stall_s, budget.ceiling_s)
            try:
                async with patience:
                    result.memories = await self.search(
                        scope, query, limit=limit, threshold=threshold, patience=patience
                    )
            except TimeoutError:
                result.failure = STALLED if patience.stalled else OVERLOADED
                if patience.stalled:
                    logger.warning(
                        "retrieval waited %.0f ms on a dependency that showed no progress, answering without memory",
                        budget.stall_s * 1000,
                    )
                else:
                    logger.warning(
                        "retrieval reached its %.0f ms ceiling, answering without memory", budget.ceiling_s * 1000
                    )
            except EmbedderOverloaded as exc:
                result.failure = OVERLOADED
                logger.warning("query embedder overloaded, answering without memory: %s", exc)
            except Exception as exc:  # fail open on anything: a chat must not fail because memory did
                result.failure = type(exc).__name__
                logger.warning("retrieval failed, answering without memory: %s", exc)
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result
