"""The LOCOMO benchmark's JSON: a list of samples, each a two-speaker ``conversation`` of dated
sessions (``session_N`` turns ``{speaker, dia_id, text, blip_caption?}``, ``session_N_date_time``).

Without a speaker, the user is the conversation itself: every turn is an exchange of its own,
its speaker's words as the user message, as bench/recall feeds its in-process path (the same
texts, times and metadata, so recall through ``mnemo import`` is comparable). With a speaker,
that speaker's turns are the user's and the other speaker's are the replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import ijson

from mnemo.import_formats.base import Conversation, ImportFormatError, PastExchange, Turn, exchanges

NAME = "locomo"
_SESSION = re.compile(r"^session_(\d+)$")


def read(stream: BinaryIO, speaker: str | None = None) -> Iterator[Iterator[PastExchange]]:
    """Per sample, its exchanges in order."""
    for index, raw in enumerate(ijson.items(stream, "item", use_float=True)):
        conversation = raw.get("conversation") if isinstance(raw, dict) else None
        if not isinstance(conversation, dict):
            raise ImportFormatError(f"sample {index} is not a LOCOMO sample (no `conversation` object)")
        sample_id = str(raw.get("sample_id") or f"sample-{index}")
        sessions = list(read_sessions(sample_id, conversation))
        if speaker is None:
            yield every_turn(sample_id, sessions)
        elif speaker in (conversation.get("speaker_a"), conversation.get("speaker_b")):
            yield as_speaker(sample_id, sessions, speaker)


def parse_session_time(text: str) -> datetime:
    # "1:56 pm on 8 May, 2023"
    try:
        return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    except ValueError:
        raise ImportFormatError(f"unreadable LOCOMO session time {text!r}") from None


def turn_text(raw: Mapping[str, Any]) -> str:
    # A shared photo is part of what was said; LOCOMO describes it by a caption.
    caption = raw.get("blip_caption")
    return f"{raw['text']} [shared {caption}]" if caption else str(raw["text"])


def read_sessions(sample_id: str, conversation: Mapping[str, Any]) -> Iterator[tuple[int, datetime, list[Turn]]]:
    """(number, start, turns) per session; a turn's time is the session's start plus its index in
    the whole conversation in seconds, so turns keep their order."""
    numbers = sorted(int(m.group(1)) for key in conversation if (m := _SESSION.match(key)))
    index = 0
    for number in numbers:
        started = parse_session_time(str(conversation.get(f"session_{number}_date_time", "")))
        turns = []
        for raw in conversation[f"session_{number}"]:
            if not isinstance(raw, dict) or not {"speaker", "dia_id", "text"} <= raw.keys():
                raise ImportFormatError(f"{sample_id} session {number}: a turn lacks speaker, dia_id or text")
            at = started + timedelta(seconds=index)
            turns.append(Turn(str(raw["dia_id"]), "user", turn_text(raw), at, str(raw["speaker"])))
            index += 1
        yield number, started, turns


def every_turn(sample_id: str, sessions: list[tuple[int, datetime, list[Turn]]]) -> Iterator[PastExchange]:
    for _, started, turns in sessions:
        previous: Turn | None = None
        for turn in turns:
            metadata: dict[str, Any] = {
                "speaker": turn.name,
                "session_date": started.date().isoformat(),
                "dia_ids": [turn.id],
                "imported_from": NAME,
                "conversation_id": sample_id,
            }
            if previous is not None:
                metadata["reply_to"] = f"{previous.name}: {previous.text}"
            message = {"role": "user", "content": turn.text, "name": turn.name or ""}
            yield PastExchange(sample_id, turn.id, [message], "", turn.at, metadata)
            previous = turn


def as_speaker(
    sample_id: str, sessions: list[tuple[int, datetime, list[Turn]]], speaker: str
) -> Iterator[PastExchange]:
    for _, started, turns in sessions:
        roled = [Turn(t.id, "user" if t.name == speaker else "assistant", t.text, t.at, t.name) for t in turns]
        metadata = {
            "speaker": speaker,
            "session_date": started.date().isoformat(),
            "imported_from": NAME,
            "conversation_id": sample_id,
        }
        yield from exchanges(Conversation(sample_id, roled, metadata))
