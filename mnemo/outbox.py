"""A durable local outbox for exchanges the queue could not take (Redis down or slow).

SQLite in the data directory, WAL with synchronous=FULL, so an exchange written here
survives a crash or restart of the gateway. Erasing a user leaves none of their text in the
files (``secure_delete``, then a WAL checkpoint). It is bounded: past ``max_items`` new
exchanges are refused (and counted) instead of filling the disk. Rows leave in arrival
order, once Redis has accepted them.

sqlite3 is synchronous: each call is one small local write or read (well under a
millisecond on an SSD plus the fsync), made only while Redis is unavailable, so it runs
on the event loop rather than through a thread wrapper.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutboxItem:
    row: int
    job_id: str
    user_id: str
    payload: str


class Outbox:
    def __init__(self, path: Path, max_items: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_items = max_items
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # A deleted row's bytes are zeroed, not left in a free page: an erased user's text must
        # not stay in the file (see delete_user).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " row INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT UNIQUE NOT NULL,"
            " user_id TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    def put(self, job_id: str, user_id: str, payload: str) -> bool:
        """Keep an exchange; False when the outbox is full. A job id already kept is a no-op."""
        if self._count >= self.max_items:
            return False
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO outbox (job_id, user_id, payload) VALUES (?, ?, ?)", (job_id, user_id, payload)
        )
        self._count += cursor.rowcount
        return True

    def oldest(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT row, job_id, user_id, payload FROM outbox ORDER BY row LIMIT ?", (limit,)
        ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def remove(self, row: int) -> None:
        self._count -= self._db.execute("DELETE FROM outbox WHERE row = ?", (row,)).rowcount

    def delete_user(self, user_id: str) -> int:
        """Erasure: drop every kept exchange of a user."""
        removed = self._db.execute("DELETE FROM outbox WHERE user_id = ?", (user_id,)).rowcount
        self._count -= removed
        if removed:
            # The rows' original frames stay in the WAL until a checkpoint: write the zeroed
            # pages back and empty it.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    def close(self) -> None:
        self._db.close()
