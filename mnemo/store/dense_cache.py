"""The dense vectors of users who hold many memories, kept in memory for the embedded store.

Qdrant Edge never gets a vector index in Mnemo (its ``optimize`` holds the GIL for seconds), so
it scores every memory of a user on each search, on the event loop: 4-8 ms for a user holding
20,000 memories on an AVX-512 host, ~14 ms on an AVX2 one. For such a user one matrix product
finds the same nearest memories in a fraction of that; the store then asks Edge to score only
those (a ``HasId`` condition on the dense prefetch), so thresholds, keyword fusion and payloads
stay Edge's and the results are the ones a full scan gives.

The copy is kept current by the store's own writes (one process owns an embedded store), is built
in the background once a search finds a user holding ``min_memories``, and is bounded by
``max_bytes``, the users searched least recently leaving first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FLOAT_BYTES = 4


@dataclass(frozen=True)
class Row:
    """What a dense search needs to know of one memory besides its vector."""

    point_id: str
    agent_id: str  # "" for a memory shared by every agent of its user
    valid: bool


class UserVectors:
    """One user's vectors as rows of a matrix, with what a search filters them on."""

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        self.ready = False  # filled from the store yet? (writes are applied before that too)
        self._matrix = np.zeros((capacity, dimension), dtype=np.float32)
        self._agents = np.zeros(capacity, dtype=np.int32)  # codes of agent ids; 0 is "" (shared)
        self._valid = np.zeros(capacity, dtype=bool)
        self._live = np.zeros(capacity, dtype=bool)  # False once deleted, until the rows are packed
        self._agent_codes: dict[str, int] = {"": 0}
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return int(self._matrix.nbytes + self._agents.nbytes + self._valid.nbytes + self._live.nbytes)

    def put(self, row: Row, vector: Sequence[float]) -> None:
        """Add a memory, or replace what is known of it."""
        index = self._rows.get(row.point_id)
        if index is None:
            index = len(self._ids)
            if index == len(self._matrix):
                self._grow()
            self._ids.append(row.point_id)
            self._rows[row.point_id] = index
        # Edge's cosine distance normalises what it stores; so does this copy, whatever the embedder.
        row_vector = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(row_vector))
        self._matrix[index] = row_vector / norm if norm > 0 else row_vector
        self._agents[index] = self._agent_codes.setdefault(row.agent_id, len(self._agent_codes))
        self._valid[index] = row.valid
        self._live[index] = True

    def invalidate(self, point_id: str) -> None:
        if (index := self._rows.get(point_id)) is not None:
            self._valid[index] = False

    def remove(self, point_id: str) -> None:
        if (index := self._rows.pop(point_id, None)) is not None:
            self._live[index] = False
            if len(self._rows) < len(self._ids) // 2:
                self._pack()

    def nearest(
        self, vector: Sequence[float], count: int, *, agent_id: str | None, include_invalidated: bool
    ) -> list[str]:
        """Point ids of the ``count`` rows closest to ``vector`` by cosine (rows are unit length)
        among those a search of that scope may see, best first."""
        used = len(self._ids)
        if used == 0 or count <= 0:
            return []
        allowed = self._live[:used] if include_invalidated else self._live[:used] & self._valid[:used]
        if agent_id is not None:
            agents = self._agents[:used]
            code = self._agent_codes.get(agent_id)
            allowed = allowed & ((agents == 0) | (agents == code)) if code is not None else allowed & (agents == 0)
        query = np.asarray(vector, dtype=np.float32)
        scores = np.where(allowed, self._matrix[:used] @ query, -np.inf)
        count = min(count, int(allowed.sum()))
        if count == 0:
            return []
        best = np.argpartition(-scores, count - 1)[:count] if count < used else np.arange(used)
        best = best[np.argsort(-scores[best], kind="stable")][:count]
        return [self._ids[index] for index in best.tolist()]

    def _grow(self) -> None:
        capacity = len(self._matrix) * 2
        self._matrix = np.resize(self._matrix, (capacity, self._matrix.shape[1]))
        for name in ("_agents", "_valid", "_live"):
            setattr(self, name, np.resize(getattr(self, name), capacity))

    def _pack(self) -> None:
        """Drop deleted rows, so a user who erases much does not keep their space."""
        keep = np.flatnonzero(self._live[: len(self._ids)])
        self._matrix[: len(keep)] = self._matrix[keep]
        self._agents[: len(keep)] = self._agents[keep]
        self._valid[: len(keep)] = self._valid[keep]
        self._live[: len(keep)] = True
        self._live[len(keep) :] = False
        self._ids = [self._ids[index] for index in keep.tolist()]
        self._rows = {point_id: index for index, point_id in enumerate(self._ids)}


class DenseCache:
    """The users whose vectors are kept, least recently searched first."""

    def __init__(self, dimension: int, *, min_memories: int, max_bytes: int) -> None:
        self.dimension = dimension
        self.min_memories = min_memories
        self.max_bytes = max_bytes
        self._users: OrderedDict[str, UserVectors] = OrderedDict()

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    def worth_keeping(self, memories: int) -> bool:
        """Whether a user holding this many memories should have their vectors kept."""
        fits = memories * self.dimension * FLOAT_BYTES <= self.max_bytes
        return self.min_memories > 0 and memories >= self.min_memories and fits

    def searched(self, user_id: str) -> UserVectors | None:
        """The user's vectors if they are ready, marking the user as the most recently searched."""
        vectors = self._users.get(user_id)
        if vectors is None or not vectors.ready:
            return None
        self._users.move_to_end(user_id)
        return vectors

    def start(self, user_id: str, memories: int = 0) -> UserVectors:
        """An empty entry for a user about to be loaded, sized for the memories they hold and some
        more (it doubles when full): writes reach it from now on."""
        vectors = self._users[user_id] = UserVectors(self.dimension, capacity=max(64, memories + memories // 8))
        return vectors

    def loaded(self, user_id: str, vectors: UserVectors) -> bool:
        """The entry is complete: searches use it from now on. False if it was dropped meanwhile."""
        if self._users.get(user_id) is not vectors:
            return False  # the user was erased while it loaded
        vectors.ready = True
        self._users.move_to_end(user_id)
        total = sum(kept.nbytes for kept in self._users.values())
        while total > self.max_bytes and (oldest := next(iter(self._users))) != user_id:
            total -= self._users.pop(oldest).nbytes
        return True

    def abandon(self, user_id: str, vectors: UserVectors) -> None:
        """A load that did not finish: the user is searched through the store, and may load again."""
        if self._users.get(user_id) is vectors:
            del self._users[user_id]

    def put(self, user_id: str, row: Row, vector: Sequence[float]) -> None:
        """A memory was written; kept only for users already kept."""
        if (vectors := self._users.get(user_id)) is not None:
            vectors.put(row, vector)

    def invalidate(self, point_id: str) -> None:
        for vectors in self._users.values():  # a few users at most: no index of who holds what
            vectors.invalidate(point_id)

    def remove(self, point_ids: Sequence[str]) -> None:
        for vectors in self._users.values():
            for point_id in point_ids:
                vectors.remove(point_id)

    def usage(self) -> tuple[int, int]:
        """Users whose vectors are kept (loaded or loading), and the bytes they take."""
        return len(self._users), sum(vectors.nbytes for vectors in self._users.values())

    def drop(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def clear(self) -> None:
        self._users.clear()
