"""Vector stores for memories: the protocol and its two Qdrant backends."""

from mnemo.store.base import MemoryStore, StoreIdentity

__all__ = ["MemoryStore", "StoreIdentity"]
