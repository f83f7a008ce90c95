"""Reading the LOCOMO JSON format: conversations as dated, attributed turns, and the questions
with their (normalised) evidence dia_ids."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
_DIA_ID = re.compile(r"^D:?(\d+):0*(\d+)$")
_SESSION = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    at: datetime

    @property
    def date(self) -> str:
        return self.at.date().isoformat()


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    turns: list[Turn]
    questions: list[Question]


def normalise_evidence(raw: list[str]) -> frozenset[str]:
    """'D8:6; D9:17' is two ids, 'D:11:26' is D11:26, 'D30:05' is D30:5, a bare 'D' is nothing."""
    found = set()
    for entry in raw:
        for part in str(entry).split(";"):
            match = _DIA_ID.match(part.strip())
            if match:
                found.add(f"D{int(match.group(1))}:{int(match.group(2))}")
    return frozenset(found)


def parse_session_time(text: str) -> datetime:
    # "1:56 pm on 8 May, 2023"
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def turn_text(raw: dict[str, Any]) -> str:
    # A shared photo is part of what was said; LOCOMO describes it by a caption.
    caption = raw.get("blip_caption")
    return f"{raw['text']} [shared {caption}]" if caption else str(raw["text"])


def read_turns(conversation: dict[str, Any]) -> list[Turn]:
    sessions = sorted(int(m.group(1)) for key in conversation if (m := _SESSION.match(key)))
    turns = []
    for number in sessions:
        started = parse_session_time(conversation[f"session_{number}_date_time"])
        for raw in conversation[f"session_{number}"]:
            turns.append(Turn(raw["dia_id"], raw["speaker"], turn_text(raw), number, started))
    return turns


def read_questions(qa: list[dict[str, Any]]) -> list[Question]:
    questions = []
    for item in qa:
        evidence = normalise_evidence(item.get("evidence") or [])
        if item.get("category") in CATEGORIES and evidence:
            questions.append(Question(item["question"], item["category"], evidence))
    return questions


def load(path: Path) -> list[Conversation]:
    samples = json.loads(path.read_text(encoding="utf-8"))
    return [Conversation(s["sample_id"], read_turns(s["conversation"]), read_questions(s["qa"])) for s in samples]
