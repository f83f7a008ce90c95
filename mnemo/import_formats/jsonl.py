"""A simple JSON Lines chat log: one message per line, ``{"role", "content", "created_at"?,
"conversation_id"?, "id"?}``. Consecutive lines with the same ``conversation_id`` form a
conversation. A line's ``id`` is its identity on re-runs; without one, its line number is (so
give ids to a file that may be edited between runs)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from mnemo.import_formats.base import Conversation, ImportFormatError, Role, Turn, epoch_time, iso_time

NAME = "jsonl"
DEFAULT_CONVERSATION = "jsonl"
ROLES: dict[str, Role] = {"user": "user", "human": "user", "assistant": "assistant"}


def conversations(stream: BinaryIO) -> Iterator[Conversation]:
    records = _records(stream)
    pending = next(records, None)
    while pending is not None:
        conversation_id = pending[1]

        def turns(wanted: str = conversation_id) -> Iterator[Turn]:
            nonlocal pending
            while pending is not None and pending[1] == wanted:
                if pending[0] is not None:
                    yield pending[0]
                pending = next(records, None)

        metadata = {"imported_from": NAME, "conversation_id": conversation_id}
        yield Conversation(conversation_id, turns(), metadata)
        for _ in turns():  # whatever the consumer left of this conversation
            pass


def _records(stream: BinaryIO) -> Iterator[tuple[Turn | None, str]]:
    """(turn, conversation id) per line; None for a message that is not the user's or the
    assistant's (system, tool), which still belongs to its conversation."""
    text = io.TextIOWrapper(stream, encoding="utf-8")
    try:
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise ImportFormatError(f"line {number} is not JSON: {exc}") from None
            yield read_line(raw, number)
    except UnicodeDecodeError:
        raise ImportFormatError("the file is not UTF-8 text") from None
    finally:
        text.detach()  # the stream is its opener's to close, not the wrapper's


def read_line(raw: Any, number: int) -> tuple[Turn | None, str]:
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise ImportFormatError(f"line {number} must be an object with a string `role`")
    conversation = raw.get("conversation_id", DEFAULT_CONVERSATION)
    if not isinstance(conversation, str | int) or conversation == "":
        raise ImportFormatError(f"line {number}: `conversation_id` must be a non-empty string")
    content = raw.get("content")
    if isinstance(content, list):
        content = "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    if not isinstance(content, str):
        raise ImportFormatError(f"line {number}: `content` must be a string or an array of text parts")
    at = iso_time(raw.get("created_at")) or epoch_time(raw.get("created_at"))
    if raw.get("created_at") is not None and at is None:
        raise ImportFormatError(f"line {number}: `created_at` must be an ISO-8601 time or Unix seconds")
    role = ROLES.get(raw["role"])
    line_id = raw.get("id")
    turn_id = str(line_id) if isinstance(line_id, str | int) and line_id != "" else f"line-{number}"
    turn = (
        Turn(turn_id, role, content, at, raw.get("name") if isinstance(raw.get("name"), str) else None)
        if role
        else None
    )
    return turn, str(conversation)
