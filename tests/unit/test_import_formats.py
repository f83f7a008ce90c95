"""Reading chat histories for `mnemo import`: each format into past exchanges with the file's own
ids and times, the format told from the file, conversations ordered oldest first, big files
streamed, and LOCOMO read exactly as bench/recall feeds its in-process path."""

from __future__ import annotations

import json
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

from bench.recall.locomo import Conversation as BenchConversation
from bench.recall.locomo import read_questions, read_turns
from bench.recall.run import exchange_for
from mnemo.import_formats import ImportFormatError, PastExchange, Spool, detect_format, read_conversations
from tests.support.import_files import (
    at,
    chatgpt_export,
    claude_export,
    jsonl_lines,
    locomo_sample,
    write_json,
    write_jsonl,
    write_zip,
)


def read_all(path: Path, fmt: str, **options: str) -> list[PastExchange]:
    with Spool() as spool:
        for conversation in read_conversations(path, fmt, **options):  # type: ignore[arg-type]
            spool.add_conversation(conversation)
        return list(spool.ordered())


def user_texts(exchange: PastExchange) -> list[str]:
    return [m["content"] for m in exchange.messages if m["role"] == "user"]


def test_chatgpt_follows_the_current_branch_and_orders_conversations_oldest_first(tmp_path: Path) -> None:
    found = read_all(write_json(tmp_path / "conversations.json", chatgpt_export()), "chatgpt")
    # The older conversation comes first although the file lists it second; the edited-away
    # message ("trombone") and the system message are not on the current branch / not the user's.
    assert [(e.conversation_id, e.id, user_texts(e)[-1], e.reply) for e in found] == [
        ("c-old", "m1", "I live in Lisbon", "Great city!"),
        ("c-old", "m3", "I drink oolong tea", "A fine choice."),
        ("c-new", "n2b", "I play the cello", "Lovely, a string player!"),
    ]
    assert [e.at for e in found] == [at(2), at(4), at(63)]  # the reply's time: when the exchange ended
    # Earlier turns ride along as context (what a raw memory replies to, what extraction reads).
    assert [m["content"] for m in found[1].messages] == ["I live in Lisbon", "Great city!", "I drink oolong tea"]
    assert found[0].metadata == {"imported_from": "chatgpt", "conversation_id": "c-old"}


def test_claude_export_read_from_its_zip(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "claude-export.zip", "data/conversations.json", claude_export())
    assert detect_format(path) == "claude"
    found = read_all(path, "claude")
    assert [(e.id, user_texts(e)[-1], e.reply, e.at) for e in found] == [
        ("k-1-1", "I live in Porto", "Noted!", at(2)),
        ("k-1-3", "I love kayaking", "Fun!", at(4)),
    ]


def test_jsonl_groups_consecutive_lines_by_conversation(tmp_path: Path) -> None:
    found = read_all(write_jsonl(tmp_path / "log.jsonl", jsonl_lines()), "jsonl")
    assert [(e.conversation_id, e.id, user_texts(e), e.reply, e.at) for e in found] == [
        ("a", "j2", ["I moved to Quito"], "Welcome!", at(2)),
        ("b", "j4", ["I go bouldering on weekends"], "", at(5)),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2 is not JSON"),
        ('{"content": "hi"}', "line 2 must be an object with a string `role`"),
        ('{"role": "user", "content": 3}', "line 2: `content` must be a string"),
        ('{"role": "user", "content": "hi", "created_at": "yesterday"}', "line 2: `created_at` must be"),
    ],
)
def test_a_bad_jsonl_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"role": "user", "content": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match=message):
        read_all(path, "jsonl")


def test_the_format_is_told_from_the_file(tmp_path: Path) -> None:
    assert detect_format(write_json(tmp_path / "a.json", chatgpt_export())) == "chatgpt"
    assert detect_format(write_json(tmp_path / "b.json", claude_export())) == "claude"
    assert detect_format(write_json(tmp_path / "c.json", [locomo_sample()])) == "locomo"
    assert detect_format(write_jsonl(tmp_path / "d.txt", jsonl_lines())) == "jsonl"
    with pytest.raises(ImportFormatError, match="not of ChatGPT, Claude or LOCOMO"):
        detect_format(write_json(tmp_path / "e.json", [{"something": "else"}]))
    with pytest.raises(ImportFormatError, match="neither a JSON array"):
        detect_format(write_json(tmp_path / "f.json", "text"))


def test_a_file_of_the_wrong_format_is_refused_with_its_reason(tmp_path: Path) -> None:
    path = write_json(tmp_path / "claude.json", claude_export())
    with pytest.raises(ImportFormatError, match="conversation 0 is not a ChatGPT conversation"):
        read_all(path, "chatgpt")


def test_locomo_is_read_as_bench_recall_feeds_it(tmp_path: Path) -> None:
    """Every turn an exchange of its own, with the same text, time and metadata as the in-process
    path of bench/recall, so recall measured through `mnemo import` is comparable."""
    sample = locomo_sample()
    found = read_all(write_json(tmp_path / "locomo.json", [sample]), "locomo")
    bench = BenchConversation(sample["sample_id"], read_turns(sample["conversation"]), read_questions(sample["qa"]))
    expected = [exchange_for(bench, index, "raw") for index in range(len(bench.turns))]
    assert len(found) == len(expected) == 3
    for mine, theirs in zip(found, expected, strict=True):
        assert mine.at == theirs.completed_at
        assert mine.messages == [m.model_dump(exclude_none=True) for m in theirs.messages]
        assert {key: mine.metadata.get(key) for key in theirs.metadata} == theirs.metadata
    assert found[1].messages[0]["content"] == "That sounds relaxing! [shared a clay bowl]"


def test_locomo_with_a_speaker_makes_the_other_the_assistant(tmp_path: Path) -> None:
    path = write_json(tmp_path / "locomo.json", [locomo_sample(), locomo_sample("conv-u")])
    found = read_all(path, "locomo", speaker="Ana", only="conv-u")
    assert [(e.conversation_id, e.id, user_texts(e), e.reply) for e in found] == [
        ("conv-u", "D1:1", ["I took up pottery last week."], "That sounds relaxing! [shared a clay bowl]")
    ]


def test_a_big_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    """~12 MB of conversations read with a bounded Python heap: the parse and the spool keep one
    conversation at a time (json.load of this file alone takes several times the peak allowed)."""
    path = tmp_path / "conversations.json"
    text = "I keep a notebook of every bird I see on my morning walks by the river " * 30
    with path.open("w", encoding="utf-8") as file:
        file.write("[")
        for number in range(4000):
            conversation = claude_export((f"city{number}", text))[0] | {"uuid": f"k-{number}"}
            file.write(("," if number else "") + json.dumps(conversation))
        file.write("]")
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        with Spool() as spool:
            for conversation in read_conversations(path, "claude"):
                spool.add_conversation(conversation)
            count = sum(1 for _ in spool.ordered())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 8000
    assert peak < 3_000_000, f"peak Python heap {peak} bytes"


def test_conversations_without_times_keep_the_file_order_after_the_dated_ones(tmp_path: Path) -> None:
    lines = [
        {"role": "user", "content": "undated first", "conversation_id": "u1"},
        {"role": "user", "content": "dated", "conversation_id": "d", "created_at": at(0).isoformat()},
        {"role": "user", "content": "undated second", "conversation_id": "u2"},
    ]
    found = read_all(write_jsonl(tmp_path / "log.jsonl", lines), "jsonl")
    assert [user_texts(e)[0] for e in found] == ["dated", "undated first", "undated second"]
    assert found[0].at is not None and found[0].at - at(0) == timedelta(0)


def test_every_user_message_is_an_exchange_of_its_own(tmp_path: Path) -> None:
    """A log of notes without replies is many exchanges, not one the worker would cap at
    limits.max_memories_per_exchange; the earlier notes ride along as context."""
    lines = [{"id": f"n{n}", "role": "user", "content": f"note {n}"} for n in range(30)]
    found = read_all(write_jsonl(tmp_path / "notes.jsonl", lines), "jsonl")
    assert [e.id for e in found] == [f"n{n}" for n in range(30)]
    assert [m["content"] for m in found[-1].messages] == ["note 25", "note 26", "note 27", "note 28", "note 29"]
