"""Claude's data export (``conversations.json``): a list of conversations, each with its
``chat_messages`` in order (``sender`` "human" or "assistant")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import ijson

from mnemo.import_formats.base import Conversation, ImportFormatError, Role, Turn, iso_time, text_of

NAME = "claude"
ROLES: dict[str, Role] = {"human": "user", "user": "user", "assistant": "assistant"}


def conversations(stream: BinaryIO) -> Iterator[Conversation]:
    for index, raw in enumerate(ijson.items(stream, "item", use_float=True)):
        if not isinstance(raw, dict) or not isinstance(raw.get("chat_messages"), list):
            raise ImportFormatError(f"conversation {index} is not a Claude conversation (no `chat_messages` array)")
        conversation_id = str(raw.get("uuid") or f"conversation-{index}")
        yield Conversation(
            conversation_id,
            list(turns(raw, conversation_id)),
            {"imported_from": NAME, "conversation_id": conversation_id},
        )


def turns(raw: Mapping[str, Any], conversation_id: str) -> Iterator[Turn]:
    started = iso_time(raw.get("created_at"))
    for number, message in enumerate(raw["chat_messages"]):
        if not isinstance(message, dict):
            continue
        role = ROLES.get(str(message.get("sender")))
        text = message_text(message)
        if role is not None and text.strip():
            at = iso_time(message.get("created_at")) or started
            yield Turn(str(message.get("uuid") or f"{conversation_id}:{number}"), role, text, at)


def message_text(message: Mapping[str, Any]) -> str:
    text = text_of(message.get("text"))
    if text.strip():
        return text
    content = message.get("content")
    if not isinstance(content, list):
        return ""
    parts = [text_of(part.get("text")) for part in content if isinstance(part, dict) and part.get("type") == "text"]
    return "\n".join(part for part in parts if part)
