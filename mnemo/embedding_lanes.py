"""The threads a local embedder runs its forward passes on: a lane per kind of work (chat
queries, texts to store, background texts), each fed by a queue of calls served in order, and
measuring its own pace so that a caller can tell a busy lane from a stuck one."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mnemo.errors import EmbedderError, EmbedderOverloaded

logger = logging.getLogger(__name__)

# Most texts a lane takes into one batch (at least one whole call). Queries coalesce: on an idle
# machine a batch saves little (2.1 -> 1.5 ms a short question at 16), but under load each batch
# carries a fixed cost (waking the thread, taking the GIL back from a busy event loop): at 64
# concurrent chats on 2 vCPUs (bench/overhead) a lone query took 7.8 ms and one of 16 2.5 ms a
# text, and with one query per pass retrieval took ~430 ms on average instead of ~50. The cap keeps
# a pass short enough for a stuck one to stand out within memory.retrieval_timeout_ms.
ROWS_PER_BATCH = 16
# A queued call: its texts, and the future its caller awaits (cancelled once the caller gives up).
_Call = tuple[list[str], asyncio.Future[list[list[float]]]]
# Weight of the latest batch in a lane's moving averages of batch time and size.
SMOOTHING = 0.2


class Lane:
    """Threads running forward passes, fed by a queue of calls served in order.

    While one batch runs, newly arriving calls queue up; the next batch takes the waiting calls in
    order, up to ``rows`` texts (always at least one whole call). A call whose caller gave up is
    dropped before its texts run. The background lane runs on a thread with a higher nice value,
    so on a busy machine the OS schedules the other lanes first. With ``threads`` > 1 a batch is
    cut into that many runs that go side by side (onnxruntime sessions take concurrent runs).

    A caller with a deadline learns two things here, from the pace measured on recent batches:
    until when the lane is known to be working (a lane that keeps finishing batches in about
    their expected time is busy, not stuck), and whether the texts already queued can be done by
    its deadline; if not, it is refused at once. Times are ``time.monotonic()``, stamped by the
    lane's threads themselves, so a busy event loop is not mistaken for a stuck lane.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str]], np.ndarray[Any, Any]],
        name: str,
        nice: int = 0,
        threads: int = 1,
        rows: int = ROWS_PER_BATCH,
    ) -> None:
        self._encode = encode
        self._threads = threads
        self._rows = rows
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=name, initializer=self._thread_started, initargs=(nice,)
        )
        self._pending: deque[_Call] = deque()
        self._draining = False
        self._queued = 0  # texts waiting for a batch
        self._running = 0  # texts of the batch being embedded
        # Moving averages over batches, seconds (queueing for a thread included) and texts: their
        # ratio is the time per text at the batch sizes the load brings.
        self._batch_s = 0.0
        self._batch_texts = 0.0
        # Time per text of batches at least half full: the pace a long queue goes at, as each
        # batch's fixed cost (waking a thread, taking the GIL) is shared by more texts.
        self._full_pace = 0.0
        self._run_started: float | None = None  # when a thread last started a run
        self._run_finished: float | None = None  # when a thread last finished one
        self._cpu_clocks: list[int] = []  # each lane thread's CPU-time clock, where the OS has them
        self._cpu_seen = 0.0  # the threads' CPU time at the last look
        self._cpu_grew_at: float | None = None  # the last look that saw it grow

    def _thread_started(self, nice: int) -> None:
        lower_thread_priority(nice)
        if hasattr(time, "pthread_getcpuclockid"):  # not on Windows
            self._cpu_clocks.append(time.pthread_getcpuclockid(threading.get_ident()))

    def seconds_per_text(self) -> float:
        return self._batch_s / self._batch_texts if self._batch_texts else 0.0

    def alive_until(self) -> float | None:
        """The latest moment the lane is known to be working (None: it never ran): when it last
        finished a run or, while one runs, the later of when that run should end at the measured
        pace and when its threads were last seen computing. A run computes however slowly a busy
        machine lets it; one that waits on nothing is stuck."""
        started, finished = self._run_started, self._run_finished
        if started is None or (finished is not None and finished >= started):
            return finished
        expected_end = started + self._running * self.seconds_per_text() / self._threads
        if self._cpu_clocks:
            cpu = sum(time.clock_gettime(clock) for clock in self._cpu_clocks)
            if cpu > self._cpu_seen:
                self._cpu_seen, self._cpu_grew_at = cpu, time.monotonic()
            if self._cpu_grew_at is not None and self._cpu_grew_at > expected_end:
                return self._cpu_grew_at
        return expected_end

    def expected_wait_s(self, texts: int) -> float:
        """About how long ``texts`` more would take to come back, after everything queued or running,
        at the pace a long queue goes (rather under than over: a caller refused needlessly goes
        without memory, one admitted needlessly only waits to its deadline)."""
        pace = self._full_pace or self.seconds_per_text()
        return (self._queued + self._running + texts) * pace / self._threads

    async def submit(self, texts: list[str], deadline: float | None = None) -> list[list[float]]:
        """The texts' vectors, in order. ``deadline`` (``time.monotonic()``): refuse at once with
        EmbedderOverloaded when the texts ahead cannot be done by then."""
        if deadline is not None:
            wait_s = self.expected_wait_s(len(texts))
            if time.monotonic() + wait_s > deadline:
                raise EmbedderOverloaded(
                    f"{self._queued + self._running} texts ahead in the query embedder, about "
                    f"{wait_s * 1000:.0f} ms: past the deadline"
                )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        call = (texts, future)
        self._pending.append(call)
        self._queued += len(texts)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up (its deadline, a client gone): its texts leave the queue now, so
            # a stuck lane's queue holds only callers still waiting, and the next estimate is right.
            if future.cancelled() and call in self._pending:
                self._pending.remove(call)
                self._queued -= len(texts)
            raise

    def _next_batch(self) -> list[_Call]:
        batch: list[_Call] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= self._rows):
            texts, future = self._pending.popleft()
            self._queued -= len(texts)
            if not future.done():  # else its caller gave up waiting: nobody wants these texts
                batch.append((texts, future))
                size += len(texts)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._next_batch()
                texts = [text for group, _ in batch for text in group]
                if not texts:
                    continue
                self._running = len(texts)
                started = time.monotonic()
                try:
                    matrix = await self._run(loop, texts)
                except Exception as exc:  # onnxruntime raises plain RuntimeErrors
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(EmbedderError(f"local embedder failed: {exc}"))
                    continue
                finally:
                    self._measured(time.monotonic() - started, len(texts))
                start = 0
                for group, future in batch:
                    if not future.done():
                        future.set_result(matrix[start : start + len(group)].tolist())
                    start += len(group)
        finally:
            self._draining = False

    def _measured(self, seconds: float, texts: int) -> None:
        self._running = 0
        if not self._batch_texts:
            self._batch_s, self._batch_texts = seconds, float(texts)
        else:
            self._batch_s += SMOOTHING * (seconds - self._batch_s)
            self._batch_texts += SMOOTHING * (texts - self._batch_texts)
        if 2 * texts >= self._rows:
            pace = seconds / texts
            self._full_pace = pace if not self._full_pace else self._full_pace + SMOOTHING * (pace - self._full_pace)

    def _stamped(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """On a lane thread: one run, stamped as it starts and ends."""
        self._run_started = time.monotonic()
        try:
            return self._encode(texts)
        finally:
            self._run_finished = time.monotonic()

    async def _run(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> np.ndarray[Any, Any]:
        if self._threads == 1 or len(texts) == 1:
            return await loop.run_in_executor(self._executor, self._stamped, texts)
        size = -(-len(texts) // self._threads)
        parts = [texts[start : start + size] for start in range(0, len(texts), size)]
        runs = [loop.run_in_executor(self._executor, self._stamped, part) for part in parts]
        return np.concatenate(await asyncio.gather(*runs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def lower_thread_priority(nice: int) -> None:
    # Linux gives each thread its own nice value (setpriority on the thread id); elsewhere the
    # call would renice the whole process, so it is skipped.
    if nice and sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            logger.warning("could not lower the background embedder thread's priority")
