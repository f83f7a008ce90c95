"""Jobs that hold a worker slot but no CPU: waiting on their extraction LLM, for their user's
turn, or for their user's lock.

Under ``mnemo up`` the worker yields the CPU to the gateway's chats, not its slots: while chats
are in flight it starts another job only when every running job is waiting. An LLM answer takes
seconds, and a busy gateway always has a chat in flight, so one job at a time would have capped
extraction at one exchange per LLM round trip (measured: 20 exchanges, 0.3 s per LLM answer,
10.1 s to apply with a chat in flight against 1.8 s idle).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mnemo.llm import Completion, JsonLLM


class JobWaits:
    def __init__(self) -> None:
        self.waiting = 0

    @contextmanager
    def wait(self) -> Iterator[None]:
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1


class WaitCountingLLM:
    """The extraction LLM, counting each caller as waiting while its answer is out."""

    def __init__(self, llm: JsonLLM, waits: JobWaits) -> None:
        self.llm = llm
        self.model = llm.model
        self._waits = waits

    async def complete(self, system: str, user: str) -> Completion:
        with self._waits.wait():
            return await self.llm.complete(system, user)

    async def aclose(self) -> None:
        await self.llm.aclose()
