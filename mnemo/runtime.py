"""The memory core a process needs at run time: one embedder and one store, opened together.

``mnemo up`` opens one Core and shares it between the gateway and the worker, because the
embedded store allows one process (and one handle) per data directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mnemo.activity import ChatActivity
from mnemo.config import Settings
from mnemo.embedding import Embedder, build_embedder
from mnemo.errors import EmbedderError
from mnemo.store import MemoryStore, StoreIdentity

logger = logging.getLogger(__name__)


@dataclass
class Core:
    embedder: Embedder
    store: MemoryStore
    activity: ChatActivity = field(default_factory=ChatActivity)  # the gateway's chats, when it shares the core

    async def warm_worker_path(self) -> None:
        """Embed one text the way a worker stores them, as a worker starts: the stored-text model
        is then loaded (~17 MB; mnemo serve, which never stores, never loads it) before the first
        exchange waits on it, and a process's 'ready' holds what it will hold at work."""
        try:
            await self.embedder.probe(stored=True)
        except EmbedderError as exc:  # a remote embedder down at start: the jobs retry later
            logger.warning("the embedder did not answer at start (%s); the worker starts anyway", exc)

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()


def build_store(settings: Settings, identity: StoreIdentity) -> MemoryStore:
    """The configured store; the backends are imported here, so the store contract
    (mnemo.store.base) imports none of them."""
    from mnemo.store.hybrid import HybridOptions

    options = HybridOptions.from_settings(settings.memory)
    if settings.store.kind == "edge":
        from mnemo.store.dense_cache import DenseCache
        from mnemo.store.edge import EdgeMemoryStore

        store = settings.store
        cache = None  # turned off: searches do not even count a user's memories
        if store.vector_cache_min_memories and store.vector_cache_mb:
            budget = store.vector_cache_mb * 2**20
            cache = DenseCache(identity.dimension, min_memories=store.vector_cache_min_memories, max_bytes=budget)
        return EdgeMemoryStore(settings.data_path / "qdrant-edge", store.collection, identity, options, cache)
    from mnemo.store.server import QdrantServerMemoryStore

    return QdrantServerMemoryStore(settings.store, identity, options)


async def open_core(settings: Settings) -> Core:
    embedder = build_embedder(settings.embedder)
    store = build_store(settings, StoreIdentity(embedder.model_id, embedder.dimension))
    try:
        await store.open()
    except BaseException:
        await embedder.close()
        raise
    logger.info("memory store %s open with embedder %s", settings.store.kind, embedder.model_id)
    return Core(embedder=embedder, store=store)
