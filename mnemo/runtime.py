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
from mnemo.store import MemoryStore, StoreIdentity, build_store

logger = logging.getLogger(__name__)


@dataclass
class Core:
    embedder: Embedder
    store: MemoryStore
    activity: ChatActivity = field(default_factory=ChatActivity)  # the gateway's chats, when it shares the core

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()


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
