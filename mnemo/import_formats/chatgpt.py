"""ChatGPT's data export (``conversations.json``): a list of conversations, each a tree of messages
in ``mapping`` (edits and regenerations branch it). The conversation as the user last saw it is
the branch from ``current_node`` back to the root."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import ijson

from mnemo.import_formats.base import Conversation, ImportFormatError, Turn, epoch_time, text_of

NAME = "chatgpt"
# Message content types that are what was said; the rest are tool output, browsing displays,
# reasoning summaries or custom instructions, which are not the conversation.
TEXT_TYPES = ("text", "multimodal_text")


def conversations(stream: BinaryIO) -> Iterator[Conversation]:
    for index, raw in enumerate(ijson.items(stream, "item", use_float=True)):
        if not isinstance(raw, dict) or not isinstance(raw.get("mapping"), dict):
            raise ImportFormatError(f"conversation {index} is not a ChatGPT conversation (no `mapping` object)")
        conversation_id = str(raw.get("conversation_id") or raw.get("id") or f"conversation-{index}")
        yield Conversation(
            conversation_id, list(turns(raw)), {"imported_from": NAME, "conversation_id": conversation_id}
        )


def current_branch(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The nodes from the root to ``current_node`` (a conversation without one: to its last leaf)."""
    mapping: Mapping[str, Any] = raw["mapping"]
    node_id = raw.get("current_node")
    if node_id not in mapping:
        leaves = [key for key, node in mapping.items() if isinstance(node, dict) and not node.get("children")]
        node_id = leaves[-1] if leaves else None
    branch: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            break
        branch.append(node)
        node_id = node.get("parent")
    return list(reversed(branch))


def turns(raw: Mapping[str, Any]) -> Iterator[Turn]:
    started = epoch_time(raw.get("create_time"))
    for node in current_branch(raw):
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        role = _field(message, "author").get("role")
        if role not in ("user", "assistant") or _field(message, "metadata").get("is_visually_hidden_from_conversation"):
            continue
        if message.get("recipient") not in (None, "all"):
            continue  # a tool call, not a reply
        text = content_text(message.get("content"))
        if text.strip():
            at = epoch_time(message.get("create_time")) or started
            yield Turn(str(message.get("id") or node.get("id")), role, text, at)


def _field(message: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = message.get(name)
    return value if isinstance(value, dict) else {}


def content_text(content: Any) -> str:
    if not isinstance(content, dict) or content.get("content_type") not in TEXT_TYPES:
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    # Images and files are dicts among the parts: only what was written is remembered.
    return "\n".join(text_of(part) for part in parts if text_of(part)).strip()
