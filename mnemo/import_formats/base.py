"""What every import format is read into: conversations as ordered turns, and the past exchanges
(a user turn with the reply it got) that Mnemo's worker applies like live chats.

A format reader yields :class:`Turn` streams, one conversation after another; :func:`exchanges`
groups one conversation's turns into :class:`PastExchange` records as it reads them, keeping only
a few turns of context, so no conversation is ever held whole in memory here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

# Earlier turns sent with each exchange: what the worker's extraction shows the model as context
# (mnemo.extraction.CONTEXT_MESSAGES), and the assistant message a raw memory answers.
CONTEXT_TURNS = 4

Role = Literal["user", "assistant"]


class ImportFormatError(ValueError):
    """The file is not in the format it claims (or was detected as): one readable line."""


@dataclass(frozen=True)
class Turn:
    id: str  # the file's own id of the message
    role: Role
    text: str
    at: datetime | None
    name: str | None = None


@dataclass(frozen=True)
class PastExchange:
    """One user turn and the reply it got, with the file's own ids and the original time."""

    conversation_id: str
    id: str  # the file's own id of the turn's last user message: the exchange's identity on re-runs
    messages: list[dict[str, str]]  # context turns, then the user turn: {"role", "content", "name"?}
    reply: str
    at: datetime | None  # when it was said (the reply's time, else the user's): memories' created_at
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "id": self.id,
            "messages": self.messages,
            "reply": self.reply,
            "metadata": self.metadata,
        }
        if self.at is not None:
            data["created_at"] = self.at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PastExchange:
        at = data.get("created_at")
        return cls(
            conversation_id=str(data["conversation_id"]),
            id=str(data["id"]),
            messages=list(data["messages"]),
            reply=str(data.get("reply", "")),
            at=datetime.fromisoformat(at) if isinstance(at, str) else None,
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class Conversation:
    """One conversation of a file: its id, and its turns as a lazy stream (read once)."""

    id: str
    turns: Iterable[Turn]
    metadata: dict[str, Any] = field(default_factory=dict)


def message(turn: Turn) -> dict[str, str]:
    data = {"role": turn.role, "content": turn.text}
    if turn.name:
        data["name"] = turn.name
    return data


def exchanges(conversation: Conversation) -> Iterator[PastExchange]:
    """The conversation's exchanges in order: each user turn with the assistant turns that follow
    it as the reply, and up to CONTEXT_TURNS turns before it as context. Every user message is an
    exchange of its own (a log of notes without replies is many exchanges, not one capped at
    limits.max_memories_per_exchange); assistant turns before the first user turn are context
    only; a user turn without reply is an exchange with an empty reply."""
    context: deque[Turn] = deque(maxlen=CONTEXT_TURNS)
    asked: Turn | None = None
    replies: list[Turn] = []

    def flush(user: Turn) -> PastExchange:
        at = next((t.at for t in reversed([user, *replies]) if t.at is not None), None)
        return PastExchange(
            conversation_id=conversation.id,
            id=user.id,
            messages=[message(t) for t in [*context, user]],
            reply="\n\n".join(t.text for t in replies),
            at=at,
            metadata=dict(conversation.metadata),
        )

    for turn in conversation.turns:
        if not turn.text.strip():
            continue
        if turn.role == "assistant":
            if asked is None:
                context.append(turn)
            else:
                replies.append(turn)
            continue
        if asked is not None:
            yield flush(asked)
            context.extend([asked, *replies])
        asked, replies = turn, []
    if asked is not None:
        yield flush(asked)


def epoch_time(value: Any) -> datetime | None:
    """A Unix time in seconds (ChatGPT's ``create_time``) as an aware datetime; None if absent."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(float(value), UTC)


def iso_time(value: Any) -> datetime | None:
    """An ISO-8601 string (Claude's ``created_at``) as an aware datetime (UTC if it has no zone)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""
