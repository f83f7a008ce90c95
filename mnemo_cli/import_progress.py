"""The progress line of ``mnemo import``: a bar of exchanges done (applied, failed, dropped, or
already imported by an earlier run), what is queued and failed, the rate and an ETA. Redrawn in
place on a terminal; on a pipe or a log, one plain line every LOG_INTERVAL_S instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

BAR_WIDTH = 24
DRAW_INTERVAL_S = 0.2
LOG_INTERVAL_S = 10.0


def done_of(record: dict[str, Any]) -> int:
    """Exchanges this run is done with: applied, failed or dropped by the worker, or found already
    imported (their request id was queued or applied before: a re-run or a resumed run)."""
    return sum(int(record.get(name, 0)) for name in ("applied", "failed", "dropped", "duplicates", "refused"))


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, total: int, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.tty = stream.isatty()
        self._drawn = 0.0
        self._width = 0

    def rate(self, done: int) -> float:
        elapsed = self.clock() - self.started
        return done / elapsed if elapsed > 0 else 0.0

    def line(self, record: dict[str, Any]) -> str:
        done, total = done_of(record), max(1, self.total)
        filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
        rate = self.rate(done)
        eta = duration((self.total - done) / rate) if rate > 0 and done < self.total else "-"
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done // total:3d}% {done}/{self.total} "
            f"· queued {record.get('queued', 0)} · applied {record.get('applied', 0)} "
            f"· failed {record.get('failed', 0)} · {rate:.1f}/s · ETA {eta}"
        )

    def update(self, record: dict[str, Any], *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._drawn < (DRAW_INTERVAL_S if self.tty else LOG_INTERVAL_S):
            return
        self._drawn = now
        text = self.line(record)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
