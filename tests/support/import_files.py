"""Tiny chat histories in each format `mnemo import` reads, written by the tests themselves (no
real export or benchmark data is ever copied into the repository)."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# 2024-03-01 10:00:00 UTC and a few minutes after: times no test could produce by running now.
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + 60 * minutes, UTC)


def chatgpt_node(
    node_id: str, parent: str | None, children: list[str], role: str | None, text: str, minutes: int
) -> Any:
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role},
            "create_time": at(minutes).timestamp(),
            "content": {"content_type": "text", "parts": [text]},
            "recipient": "all",
            "metadata": {},
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def chatgpt_export(words: tuple[str, str, str] = ("Lisbon", "cello", "oolong")) -> list[dict[str, Any]]:
    """Two conversations, the newer listed first (as ChatGPT does). The first was edited: its first
    user message has a second version, and ``current_node`` is on that branch."""
    city, instrument, tea = words
    newer = {
        "id": "c-new",
        "title": "music",
        "create_time": at(60).timestamp(),
        "current_node": "n4",
        "mapping": {
            "root": chatgpt_node("root", None, ["n1"], None, "", 60),
            "n1": chatgpt_node("n1", "root", ["n2", "n2b"], "system", "You are ChatGPT", 60),
            "n2": chatgpt_node("n2", "n1", ["n3"], "user", "I play the trombone", 61),
            "n3": chatgpt_node("n3", "n2", [], "assistant", "Nice, a brass player!", 61),
            "n2b": chatgpt_node("n2b", "n1", ["n4"], "user", f"I play the {instrument}", 62),
            "n4": chatgpt_node("n4", "n2b", [], "assistant", "Lovely, a string player!", 63),
        },
    }
    older = {
        "id": "c-old",
        "title": "moving",
        "create_time": at(0).timestamp(),
        "current_node": "m4",
        "mapping": {
            "m0": chatgpt_node("m0", None, ["m1"], None, "", 0),
            "m1": chatgpt_node("m1", "m0", ["m2"], "user", f"I live in {city}", 1),
            "m2": chatgpt_node("m2", "m1", ["m3"], "assistant", "Great city!", 2),
            "m3": chatgpt_node("m3", "m2", ["m4"], "user", f"I drink {tea} tea", 3),
            "m4": chatgpt_node("m4", "m3", [], "assistant", "A fine choice.", 4),
        },
    }
    return [newer, older]


def claude_export(words: tuple[str, str] = ("Porto", "kayaking")) -> list[dict[str, Any]]:
    city, sport = words
    return [
        {
            "uuid": "k-1",
            "name": "intro",
            "created_at": at(0).isoformat(),
            "chat_messages": [
                {"uuid": "k-1-1", "sender": "human", "text": f"I live in {city}", "created_at": at(1).isoformat()},
                {"uuid": "k-1-2", "sender": "assistant", "text": "Noted!", "created_at": at(2).isoformat()},
                {
                    "uuid": "k-1-3",
                    "sender": "human",
                    "text": "",
                    "content": [{"type": "text", "text": f"I love {sport}"}],
                    "created_at": at(3).isoformat(),
                },
                {"uuid": "k-1-4", "sender": "assistant", "text": "Fun!", "created_at": at(4).isoformat()},
            ],
        }
    ]


def locomo_sample(sample_id: str = "conv-t", words: tuple[str, str] = ("pottery", "hiking")) -> dict[str, Any]:
    first, second = words
    return {
        "sample_id": sample_id,
        "qa": [{"question": "What does Ana do?", "answer": first, "evidence": ["D1:1"], "category": 4}],
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": f"I took up {first} last week."},
                {"speaker": "Ben", "dia_id": "D1:2", "text": "That sounds relaxing!", "blip_caption": "a clay bowl"},
            ],
            "session_2_date_time": "10:00 am on 9 June, 2023",
            "session_2": [{"speaker": "Ben", "dia_id": "D2:1", "text": f"I went {second} on Sunday."}],
        },
    }


def jsonl_lines(words: tuple[str, str] = ("Quito", "bouldering")) -> list[dict[str, Any]]:
    city, sport = words
    return [
        {"id": "j1", "role": "system", "content": "be nice", "conversation_id": "a"},
        {
            "id": "j2",
            "role": "user",
            "content": f"I moved to {city}",
            "created_at": at(1).isoformat(),
            "conversation_id": "a",
        },
        {
            "id": "j3",
            "role": "assistant",
            "content": "Welcome!",
            "created_at": at(2).isoformat(),
            "conversation_id": "a",
        },
        {
            "id": "j4",
            "role": "user",
            "content": f"I go {sport} on weekends",
            "created_at": at(5).isoformat(),
            "conversation_id": "b",
        },
    ]


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def write_zip(path: Path, name: str, data: Any) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, json.dumps(data))
    return path
