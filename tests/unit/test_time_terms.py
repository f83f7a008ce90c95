"""Dates as keyword terms (mnemo.time_terms, mnemo.store.keywords): relative phrases resolved
against the day a memory was said, the dates a query names, and a store finding by them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mnemo.models import Memory, Scope
from mnemo.store import keywords as kw
from mnemo.store.base import StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from mnemo.time_terms import document_terms, mentioned_days, query_terms

SAID = date(2022, 5, 2)  # a Monday


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("I watched it last night", [date(2022, 5, 1)]),
        ("Yesterday was crazy cool", [date(2022, 5, 1)]),
        ("We went camping last Saturday", [date(2022, 4, 30)]),
        ("I went there last weekend", [date(2022, 4, 30)]),
        ("I adopted her two weeks ago", [date(2022, 4, 18)]),
        ("I started 3 days ago", [date(2022, 4, 29)]),
        ("I moved last month", [date(2022, 4, 1)]),
        ("See you tomorrow!", [date(2022, 5, 3)]),
        ("I like painting", []),
    ],
)
def test_relative_phrases_are_resolved_against_the_day_the_message_was_said(text: str, days: list[date]) -> None:
    assert mentioned_days(text, SAID) == days


def test_a_memory_carries_its_own_day_and_the_days_it_talks_about() -> None:
    # Each term once: the day before is in the same month.
    assert document_terms("I watched it last night", SAID).split() == [
        "day20220502",
        "month202205",
        "monthof05",
        "day20220501",
    ]


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("What movie did Joanna watch on 1 May, 2022?", "day20220501"),
        ("What happened on May 7, 2023?", "day20230507"),
        ("What did Joanna accomplish in January 2022?", "month202201"),
        ("When did Melanie go camping in June?", "monthof06"),
        ("May I ask where Caroline lives?", ""),  # the verb, not the month
        ("When did Caroline go to the support group?", ""),
    ],
)
def test_a_query_gets_the_terms_of_the_dates_it_names(query: str, terms: str) -> None:
    assert query_terms(query) == terms


@pytest.fixture
def date_terms_on() -> Iterator[None]:
    shipped, kw.DATE_TERMS = kw.DATE_TERMS, True
    yield
    kw.DATE_TERMS = shipped


async def test_a_question_naming_a_day_finds_what_was_said_about_it(tmp_path: Path, date_terms_on: None) -> None:
    """Two memories with the same words, said two months apart: the one said the day after
    1 May 2022 ("last night") is the keyword match for a question about 1 May 2022."""
    store = EdgeMemoryStore(tmp_path, "mnemo", StoreIdentity("fake", 4))
    await store.open()
    try:
        scope = Scope(user_id="jo")
        said = {"may": "2022-05-02", "march": "2022-03-10"}
        memories = [
            Memory(
                id=name,
                text="I watched a great movie last night",
                user_id="jo",
                created_at=datetime.fromisoformat(day).replace(tzinfo=UTC),
                metadata={"speaker": "Joanna", "session_date": day},
            )
            for name, day in said.items()
        ]
        await store.upsert(memories, [[1.0, 0.0, 0.0, 0.0]] * 2)
        # A query vector far from both, under the cosine floor: the keyword side alone decides.
        question = "What movie on 1 May, 2022?"
        hits = await store.search(scope, [0.0, 1.0, 0.0, 0.0], limit=2, query_text=question, score_threshold=0.5)
        assert [hit.memory.id for hit in hits][0] == "may"
        assert hits[0].score > hits[1].score
    finally:
        await store.close()
