from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mnemo.config import MemorySettings
from mnemo.models import Memory, ScoredMemory
from mnemo.store.hybrid import HybridOptions, apply_recency, ranked_hits, wants_keywords
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


# --- scores stay in 0..1 ---------------------------------------------------------------------

# A list's rank of the hit, or None: that list missed it. Top ranks are where float32 rounding
# pushed a normalised score past 1, so they are drawn often.
RANKS = st.none() | st.integers(0, 2) | st.integers(0, 1000)


def qdrant_rrf(options: HybridOptions, dense_rank: int | None, keyword_rank: int | None) -> float:
    """The fused score as Qdrant computes it: each list's weighted reciprocal rank, summed in float32."""
    total = np.float32(0.0)
    for weight, rank in zip(options.weights, (dense_rank, keyword_rank), strict=True):
        if rank is not None:
            total = np.float32(total + np.float32(1 / (options.rrf_k - 1 + (rank + 1) / weight)))
    return float(total)


def float32_cosine(values: list[float]) -> float:
    """A vector's cosine with itself, in float32 as Qdrant computes it: 1 up to rounding."""
    vector = np.array(values, dtype=np.float32)
    vector = (vector / np.linalg.norm(vector)).astype(np.float32)
    return float(np.dot(vector, vector))


def test_a_memory_ranked_first_by_both_lists_scores_one_not_a_float32_hair_above_it() -> None:
    options = HybridOptions()  # the defaults: rrf, k = 5, keyword weight 2
    raw = qdrant_rrf(options, 0, 0)

    assert options.normalise(raw) > 1.0  # 1.000000010979803: what the search API answered
    assert ranked_hits([(hit("own text", 0).memory, raw)], options, fused=True, now=NOW, limit=1)[0].score == 1.0


@given(
    rrf_k=st.integers(1, 10) | st.integers(1, 1000),
    keyword_weight=st.sampled_from([0.5, 1.0, 2.0, 3.0]) | st.floats(0.01, 100.0),
    dense_rank=RANKS,
    keyword_rank=RANKS,
)
@example(rrf_k=5, keyword_weight=2.0, dense_rank=0, keyword_rank=0)  # the defaults: the reported 1.000000010979803
def test_every_rrf_score_qdrant_can_compute_maps_into_0_1(
    rrf_k: int, keyword_weight: float, dense_rank: int | None, keyword_rank: int | None
) -> None:
    options = HybridOptions(fusion="rrf", rrf_k=rrf_k, keyword_weight=keyword_weight)

    score = options.relevance(qdrant_rrf(options, dense_rank, keyword_rank), fused=True)

    assert 0.0 <= score <= 1.0
    if dense_rank == keyword_rank == 0:
        assert score == pytest.approx(1.0)


@given(st.lists(st.floats(-1.0, 1.0).filter(lambda x: abs(x) > 1e-3), min_size=1, max_size=384))
@example([0.3, 0.3, 0.3])  # its float32 cosine with itself is 1.000000238418579
def test_a_cosine_rounded_past_one_in_float32_still_scores_at_most_one(values: list[float]) -> None:
    assert 0.0 <= HybridOptions(fusion="dense").relevance(float32_cosine(values), fused=False) <= 1.0


@given(
    fusion=st.sampled_from(["rrf", "dbsf", "dense"]),
    fused=st.booleans(),
    raws=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20),
    half_life=st.none() | st.floats(0.1, 1000.0),
    ages=st.lists(st.floats(-10.0, 10_000.0), min_size=20, max_size=20),
)
def test_whatever_the_store_answers_every_search_score_is_within_0_1(
    fusion: str, fused: bool, raws: list[float], half_life: float | None, ages: list[float]
) -> None:
    options = HybridOptions(fusion=fusion, recency_half_life_days=half_life)  # type: ignore[arg-type]
    found = [(hit(f"m{i}", 0, age_days=age).memory, raw) for i, (raw, age) in enumerate(zip(raws, ages, strict=False))]

    ranked = ranked_hits(found, options, fused=fused, now=NOW, limit=len(found))

    assert len(ranked) == len(found)
    assert all(0.0 <= h.score <= 1.0 for h in ranked)
    if half_life is None:  # clamping keeps the store's order
        assert [h.memory.id for h in ranked] == [memory.id for memory, _ in found]
