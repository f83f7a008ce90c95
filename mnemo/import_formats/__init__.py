"""Reading chat histories for ``mnemo import``: ChatGPT's and Claude's data exports, the LOCOMO
benchmark's JSON and a simple JSONL log, streamed (a file far bigger than memory is never loaded
whole) into past exchanges ordered as they happened (see spool)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mnemo.import_formats import chatgpt, claude, jsonl, locomo
from mnemo.import_formats.base import (
    Conversation,
    ImportFormatError,
    PastExchange,
    Turn,
    exchanges,
)
from mnemo.import_formats.source import detect_format, open_source
from mnemo.import_formats.spool import ImportStats, Spool

FORMATS = ("chatgpt", "claude", "locomo", "jsonl")

__all__ = [
    "FORMATS",
    "Conversation",
    "ImportFormatError",
    "ImportStats",
    "PastExchange",
    "Spool",
    "Turn",
    "detect_format",
    "read_conversations",
    "resolve_format",
]


def resolve_format(path: Path, wanted: str = "auto") -> str:
    if wanted == "auto":
        return detect_format(path)
    if wanted not in FORMATS:
        raise ImportFormatError(f"unknown format {wanted!r} (one of auto, {', '.join(FORMATS)})")
    return wanted


def read_conversations(
    path: Path, fmt: str, *, speaker: str | None = None, only: str | None = None
) -> Iterator[Iterator[PastExchange]]:
    """Per conversation of the file, its exchanges in order, read as a stream. ``speaker``: the
    LOCOMO speaker who is the user (None: every turn); ``only``: just this conversation id."""
    with open_source(path) as stream:
        if fmt == "locomo":
            found: Iterator[Iterator[PastExchange]] = locomo.read(stream, speaker)
        else:
            reader = {"chatgpt": chatgpt.conversations, "claude": claude.conversations, "jsonl": jsonl.conversations}
            if fmt not in reader:
                raise ImportFormatError(f"unknown format {fmt!r}")
            found = (exchanges(conversation) for conversation in reader[fmt](stream))
        for conversation in found:
            if only is None:
                yield conversation
                continue
            first = next(conversation, None)
            if first is not None and first.conversation_id == only:
                yield _chain(first, conversation)
            else:
                for _ in conversation:  # a stream: skip it whole
                    pass


def _chain(first: PastExchange, rest: Iterator[PastExchange]) -> Iterator[PastExchange]:
    yield first
    yield from rest
