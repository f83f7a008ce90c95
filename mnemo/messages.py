"""Reading OpenAI chat messages: their text, the latest user turn, and the search query.

Only text parts are used for memory; image and audio parts are forwarded upstream by the
gateway but never stored or embedded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mnemo.queue import ExchangeMessage


def quote_text(text: str) -> str:
    """A JSON string literal with ``& < >`` escaped: no text quoted this way can close or
    open a tag-style delimiter around it (``</mnemo-memories>``, ``</conversation>``)."""
    literal = json.dumps(text, ensure_ascii=False)
    return literal.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def to_exchange_messages(messages: Sequence[dict[str, Any]]) -> list[ExchangeMessage]:
    """Client messages as recorded for the worker: role and text, nothing injected by Mnemo."""
    recorded = []
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str):
            continue
        name = message.get("name")
        recorded.append(
            ExchangeMessage(
                role=role, content=content_text(message.get("content")), name=name if isinstance(name, str) else None
            )
        )
    return recorded


def build_query(messages: Sequence[dict[str, Any]], context_messages: int, short_chars: int) -> str:
    """The latest user message, plus the user's previous messages when it is too short to stand
    alone ("and what about her sister?"), so the follow-up still finds what it refers to."""
    user_texts = [content_text(m.get("content")).strip() for m in messages if m.get("role") == "user"]
    user_texts = [t for t in user_texts if t]
    if not user_texts:
        return ""
    latest = user_texts[-1]
    if len(latest) >= short_chars or context_messages == 0:
        return latest
    context = user_texts[-1 - context_messages : -1]
    return "\n".join([*context, latest])
