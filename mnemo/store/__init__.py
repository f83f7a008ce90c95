"""Vector stores for memories: the protocol and its two Qdrant backends."""

from mnemo.store.base import MemoryStore, StoreIdentity, build_store

__all__ = ["MemoryStore", "StoreIdentity", "build_store"]
