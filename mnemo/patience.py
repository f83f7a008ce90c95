"""A wait that tells a busy dependency from a stuck one.

A chat's retrieval waits on dependencies one after the other (the query embedder, then the store).
Waiting in the query embedder's queue behind other chats' queries is load, not failure: as long
as the embedder keeps finishing forward passes, the wait goes on. A dependency that shows no sign
of life for ``stall_s`` (no pass finished, no answer) is taken to be down and the wait ends with
``stalled`` set; time the event loop itself was held up (a long garbage collection, a starved
process) does not count against it. Either way the whole wait ends at ``ceiling_s``: latency stays
bounded under any load, and a wait cut there was cut by load (``stalled`` stays False).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

# The latest moment (time.monotonic()) a dependency is known to be working, or None if it never
# was or cannot tell (a remote API, a store search): then only the step's own start counts.
Progress = Callable[[], float | None]
# The watchdog looks this often per stall_s: a stall is seen within 1.25 stall_s, and a look that
# comes more than a quarter of stall_s late tells of an event loop held up.
LOOKS_PER_STALL = 4


def _silent() -> float | None:
    return None


class Patience:
    """``async with Patience(stall_s, ceiling_s) as wait:``, then ``wait.waiting_on(progress)`` as
    each step starts. A wait cut short raises TimeoutError out of the block; ``stalled`` says why."""

    def __init__(self, stall_s: float, ceiling_s: float) -> None:
        self.stall_s = stall_s
        self.ceiling_s = ceiling_s
        self.stalled = False  # the wait ended because a dependency showed no sign of life
        self.deadline = 0.0  # time.monotonic() when the ceiling is reached; set on entry
        self._progress: Progress = _silent
        self._tick = stall_s / LOOKS_PER_STALL
        self._silent_since = 0.0  # the latest sign of life seen in the current step (its start at least)
        self._due = 0.0  # when the watchdog's next look is due
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Timeout | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Patience:
        self._loop = asyncio.get_running_loop()
        self.deadline = time.monotonic() + self.ceiling_s
        self._timeout = asyncio.timeout(self.ceiling_s)  # no extra task, unlike wait_for
        await self._timeout.__aenter__()
        self.waiting_on(None)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        assert self._timeout is not None
        await self._timeout.__aexit__(kind, error, trace)  # raises TimeoutError when it expired

    def waiting_on(self, progress: Progress | None) -> None:
        """A new step starts now. It is stuck once neither its start nor ``progress()`` (a later
        sign of life of the dependency it waits on) lies within the last ``stall_s``."""
        self._progress = progress or _silent
        self._silent_since = time.monotonic()
        self._look_later()

    def _look_later(self) -> None:
        assert self._loop is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._due = time.monotonic() + self._tick
        self._watchdog = self._loop.call_later(self._tick, self._look)

    def _look(self) -> None:
        assert self._timeout is not None and self._loop is not None
        if self._timeout.expired():
            return  # the ceiling came first
        now = time.monotonic()
        if now - self._due > self._tick:
            # This look comes late: the event loop itself was held up (a long garbage collection,
            # a starved process) while no sign of life could be seen. No evidence against the
            # dependency: its silence counts from now.
            self._silent_since = now
        seen = self._progress()
        if seen is not None and seen > self._silent_since:
            self._silent_since = seen
        if now - self._silent_since < self.stall_s:
            self._look_later()
        else:
            self.stalled = True
            self._timeout.reschedule(self._loop.time())  # end the wait now, as a timeout
