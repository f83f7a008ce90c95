"""Ordering an import without holding it: the first pass writes every exchange to a temporary
file, one JSON line each, and keeps only an index entry per conversation (its first time and
where its lines are); the second pass reads conversations back oldest first.

Why order at all: exports list conversations in no useful order (ChatGPT's newest first), and
with extraction on, a later fact updates an earlier one, so facts must arrive as they were said.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from mnemo.import_formats.base import PastExchange


@dataclass
class ImportStats:
    """What a file holds, counted on the first pass (``--dry-run`` prints it)."""

    conversations: int = 0
    exchanges: int = 0
    characters: int = 0  # of the user turns, their context and the replies: what extraction reads
    first: datetime | None = None
    last: datetime | None = None
    conversation_ids: set[str] = field(default_factory=set)

    def add(self, exchange: PastExchange) -> None:
        self.exchanges += 1
        self.characters += sum(len(m.get("content", "")) for m in exchange.messages) + len(exchange.reply)
        if exchange.at is not None:
            self.first = exchange.at if self.first is None else min(self.first, exchange.at)
            self.last = exchange.at if self.last is None else max(self.last, exchange.at)


@dataclass(frozen=True)
class _Run:
    key: tuple[float, int]  # (first time, order in the file)
    offset: int
    count: int


class Spool:
    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("w+b")  # noqa: SIM115  # closed by close()
        self._runs: list[_Run] = []
        self.stats = ImportStats()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def add_conversation(self, exchanges: Iterable[PastExchange]) -> None:
        offset, count, first = self._file.tell(), 0, math.inf
        for exchange in exchanges:
            if count == 0 and exchange.at is not None:
                first = exchange.at.timestamp()
            self._file.write(json.dumps(exchange.to_json(), ensure_ascii=False).encode() + b"\n")
            self.stats.add(exchange)
            self.stats.conversation_ids.add(exchange.conversation_id)
            count += 1
        if count:
            self._runs.append(_Run((first, len(self._runs)), offset, count))
            self.stats.conversations += 1

    def ordered(self) -> Iterator[PastExchange]:
        """Every exchange, conversation by conversation, the earliest started first (those
        without any time last, in file order); each conversation in its own order."""
        for run in sorted(self._runs, key=lambda r: r.key):
            self._file.seek(run.offset)
            for _ in range(run.count):
                yield PastExchange.from_json(json.loads(self._file.readline()))
