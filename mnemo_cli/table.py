"""Plain-text tables for the operator CLI: left-aligned columns, long cells cut with an ellipsis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], Any]
    max_width: int = 40


def cell(value: Any, max_width: int) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())  # newlines and tabs would break the grid
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def render_table(rows: Sequence[Row], columns: Sequence[Column], empty: str = "(none)") -> str:
    if not rows:
        return empty
    cells = [[cell(column.value(row), column.max_width) for column in columns] for row in rows]
    widths = [max(len(column.header), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.header.upper().ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def render_fields(row: Row, keys: Sequence[str]) -> str:
    """One record as ``key: value`` lines (the keys that are present)."""
    width = max(len(key) for key in keys)
    return "\n".join(f"{key.ljust(width)}  {format_value(row[key])}" for key in keys if key in row)


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def short_time(value: Any) -> str:
    """``2026-11-25T18:28:38.123456+00:00`` as ``2026-11-25 18:28:38``."""
    return str(value)[:19].replace("T", " ") if value else "-"
