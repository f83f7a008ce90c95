from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mnemo.config import MemorySettings
from mnemo.models import Memory, ScoredMemory
from mnemo.store.hybrid import HybridOptions, apply_recency, wants_keywords
from mnemo.store.keywords import context_line, document_vector, memory_context_line, query_vector

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def hit(text: str, score: float, age_days: float = 0.0) -> ScoredMemory:
    memory = Memory(id=text, text=text, user_id="u1", created_at=NOW - timedelta(days=age_days))
    return ScoredMemory(memory=memory, score=score)


def test_context_line_names_the_speaker_and_the_session_date_when_metadata_has_them() -> None:
    line = context_line("I went to the support group", NOW, {"speaker": "Caroline", "session_date": "2023-05-08"})

    assert line == "[2023-05-08] Caroline: I went to the support group"


def test_context_line_falls_back_to_the_creation_date_without_a_speaker() -> None:
    assert context_line("Likes tea", NOW, {"speaker": 3}) == "[2026-03-01] Likes tea"


def test_memory_context_line_reads_the_memorys_own_metadata() -> None:
    memory = Memory(id="m", text="Hi", user_id="u", created_at=NOW, metadata={"speaker": "Mel"})

    assert memory_context_line(memory) == "[2026-03-01] Mel: Hi"


def test_keyword_vectors_are_deterministic_and_stem_words() -> None:
    assert document_vector("painting sunsets").indices == document_vector("painting sunsets").indices
    assert set(query_vector("paint sunset").indices) == set(document_vector("painting sunsets").indices)


def test_stop_words_alone_make_an_empty_keyword_query() -> None:
    assert query_vector("what is the").indices == []


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_a_hit_ranked_first_by_both_signals_scores_one(fusion: str) -> None:
    options = HybridOptions(fusion=fusion, rrf_k=60, keyword_weight=2.0)  # type: ignore[arg-type]
    best = 1 / 60 + 1 / 59.5 if fusion == "rrf" else 2.0

    assert options.normalise(best) == pytest.approx(1.0)


def test_options_come_from_memory_settings() -> None:
    settings = MemorySettings(fusion="rrf", rrf_k=7, hybrid_candidates=30, keyword_weight=0.5)

    options = HybridOptions.from_settings(settings)

    assert (options.fusion, options.rrf_k, options.candidates, options.weights) == ("rrf", 7, 30, [1.0, 0.5])
    assert options.prefetch_limit(50) == 50 and options.prefetch_limit(5) == 30


def test_keywords_are_skipped_for_dense_fusion_and_blank_queries() -> None:
    assert wants_keywords(HybridOptions(), "tea")
    assert not wants_keywords(HybridOptions(fusion="dense"), "tea")
    assert not wants_keywords(HybridOptions(), "  ")
    assert not wants_keywords(HybridOptions(), None)


def test_without_a_half_life_recency_keeps_the_order_and_cuts_to_the_limit() -> None:
    hits = [hit("old", 0.9, age_days=900), hit("new", 0.5), hit("other", 0.4)]

    assert [h.memory.id for h in apply_recency(hits, HybridOptions(), NOW, 2)] == ["old", "new"]


def test_recency_halves_the_score_every_half_life_and_re_ranks() -> None:
    hits = [hit("old", 0.9, age_days=60), hit("new", 0.5)]

    ranked = apply_recency(hits, HybridOptions(recency_half_life_days=30), NOW, 10)

    assert [h.memory.id for h in ranked] == ["new", "old"]
    assert ranked[1].score == pytest.approx(0.9 / 4)
    assert HybridOptions(recency_half_life_days=30, candidates=50).fetch_limit(5) == 50
