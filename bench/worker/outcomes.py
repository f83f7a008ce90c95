"""Each exchange's outcome, collected bench-side: ``MemoryWriter.process`` timed and its
``IngestResult`` kept, by patching the class for the measured run only (the worker's drain jobs
keep no arq result; nothing in the packages changes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mnemo.ingest import IngestResult, MemoryWriter
from mnemo.queue import Exchange


@dataclass(frozen=True)
class Outcome:
    request_id: str
    duration_ms: float
    result: IngestResult


class Outcomes:
    """The exchanges ``MemoryWriter.process`` applied while installed, by request id (a retried
    exchange keeps its last try)."""

    def __init__(self) -> None:
        self.applied: dict[str, Outcome] = {}
        self._original = MemoryWriter.process

    def install(self) -> None:
        original, applied = self._original, self.applied

        async def process(writer: MemoryWriter, exchange: Exchange) -> IngestResult:
            started = time.perf_counter()
            result = await original(writer, exchange)
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            applied[exchange.request_id] = Outcome(exchange.request_id, duration_ms, result)
            return result

        MemoryWriter.process = process  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        MemoryWriter.process = self._original  # type: ignore[method-assign]

    def of(self, request_ids: set[str]) -> list[Outcome]:
        return [outcome for request_id, outcome in self.applied.items() if request_id in request_ids]
