"""Durations as people write them in a config file or a header: ``30d``, ``12h``, ``90m``,
``45s``, ``2w`` (or a plain number of seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
MAX = timedelta(days=100 * 365)  # beyond any retention anyone means; keeps datetime arithmetic in range


def parse_duration(text: str) -> timedelta:
    """ValueError naming the expected form for anything else (zero and negatives included)."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 2w")
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return min(timedelta(seconds=seconds), MAX)
