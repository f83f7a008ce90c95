"""Speakers in a query (mnemo.speakers): which it names, which one it is about, and the query
searched by meaning without their names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mnemo import speakers
from mnemo.models import Memory, ScoredMemory

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PAIR = ["Jon", "Gina"]


def said(speaker: str | None) -> ScoredMemory:
    metadata = {"speaker": speaker} if speaker is not None else {}
    memory = Memory(id=f"m-{speaker}", text="...", user_id="u1", created_at=NOW, metadata=metadata)
    return ScoredMemory(memory=memory, score=0.5)


def test_speakers_of_reads_metadata_speaker_and_skips_missing_blank_or_non_text_ones() -> None:
    hits = [said("Jon"), said("Gina"), said("Jon"), said(None), said("  ")]
    odd = ScoredMemory(memory=Memory(id="n", text="x", user_id="u1", created_at=NOW, metadata={"speaker": 3}), score=0)
    assert speakers.speakers_of([*hits, odd]) == {"Jon", "Gina"}


def test_named_lists_speakers_in_the_order_the_query_first_names_them_as_whole_words() -> None:
    assert speakers.named("What advice does Gina give to Jon?", PAIR) == ["Gina", "Jon"]
    assert speakers.named("What is Jon's favourite dance?", PAIR) == ["Jon"]
    assert speakers.named("Did Jonathan or Ginas call?", PAIR) == []
    assert speakers.named("what does jon like?", PAIR) == []  # case-sensitive, like the boost


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What pets does Gina have?", "Gina"),
        ("What did Jon say about Gina's progress with her store?", "Jon"),
        ("What advice does Gina give to Jon about running a business?", "Gina"),
        ("What do Jon and Gina both have in common?", None),
        ("What do both Jon & Gina like?", None),
        ("Would Jon's or Gina's studio open first?", None),
        ("Did Jon, Gina and their friends meet?", None),
        ("What do I like?", None),
    ],
)
def test_subject_is_the_one_speaker_named_or_the_first_of_several_not_joined_to_the_next(
    query: str, expected: str | None
) -> None:
    assert speakers.subject(query, PAIR) == expected


def test_without_names_puts_the_stand_in_for_each_name_and_its_possessive() -> None:
    assert speakers.without_names("What did Jon say about Gina's store?", PAIR) == (
        "What did someone say about someone's store?"
    )
    assert speakers.without_names("Is Gina\u2019s dog with Jon?", PAIR, ("they", "their")) == "Is their dog with they?"
    assert speakers.without_names("What pets does Gina have?", ["Gina"], ("", "")) == "What pets does have?"


def test_without_names_replaces_the_longer_of_two_overlapping_names_whole() -> None:
    assert speakers.without_names("Where did Mary Ann go?", ["Mary", "Mary Ann"]) == "Where did someone go?"


def test_content_query_only_when_the_query_names_a_speaker_of_the_hits() -> None:
    hits = [said("Jon"), said("Gina"), said(None)]
    assert speakers.content_query("Which cities has Jon visited?", hits) == "Which cities has someone visited?"
    assert speakers.content_query("Which cities has Maria visited?", hits) is None  # not a speaker found
    assert speakers.content_query("Which cities has Jon visited?", [said(None)]) is None  # no speakers at all
    assert speakers.content_query("", hits) is None
