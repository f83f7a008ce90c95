"""The speaker boost (mnemo.store.hybrid.apply_speaker_boost): a query about one speaker of the
memories found ranks what that speaker said higher, scores staying in 0..1."""

from __future__ import annotations

from datetime import UTC, datetime

from pytest import MonkeyPatch

from mnemo.config import MemorySettings
from mnemo.models import Memory, ScoredMemory
from mnemo.store import hybrid
from mnemo.store.hybrid import HybridOptions, apply_speaker_boost, ranked_hits

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def said(memory_id: str, speaker: str | None, score: float) -> ScoredMemory:
    metadata = {"speaker": speaker} if speaker else {}
    memory = Memory(id=memory_id, text=memory_id, user_id="u1", created_at=NOW, metadata=metadata)
    return ScoredMemory(memory=memory, score=score)


HITS = [
    said("joanna-1", "Joanna", 0.9),
    said("nate-1", "Nate", 0.6),
    said("plain", None, 0.5),
    said("nate-2", "Nate", 0.4),
]


def ids(hits: list[ScoredMemory]) -> list[str]:
    return [hit.memory.id for hit in hits]


def test_a_query_naming_one_speaker_ranks_that_speakers_memories_higher_in_their_own_order() -> None:
    boosted = apply_speaker_boost(HITS, "What pets does Nate have?", 1.0)
    # Nate's distance to 1.0 halves (0.6 -> 0.8, 0.4 -> 0.7): nate-2 passes the unattributed memory.
    assert ids(boosted) == ["joanna-1", "nate-1", "nate-2", "plain"]
    assert [round(hit.score, 3) for hit in boosted] == [0.9, 0.8, 0.7, 0.5]


def test_no_boost_for_two_speakers_named_no_speaker_named_a_name_inside_a_word_or_boost_zero() -> None:
    for query, boost in [
        ("What do Nate and Joanna both like?", 1.0),
        ("What pets do I have?", 1.0),
        ("Tell me about Nates", 1.0),
        ("What pets does Nate have?", 0.0),
    ]:
        assert apply_speaker_boost(HITS, query, boost) == HITS


def test_the_default_settings_boost_and_fetch_more_than_the_page_to_re_rank() -> None:
    options = HybridOptions.from_settings(MemorySettings())
    assert options.speaker_boost > 0 and options.fetch_limit(8) == options.candidates
    found = [(hit.memory, hit.score) for hit in HITS]
    ranked = ranked_hits(found, options, fused=False, now=NOW, limit=3, query_text="Where does Nate live?")
    assert ids(ranked) == ["joanna-1", "nate-1", "nate-2"]  # "plain" was third before the boost


def test_a_query_naming_two_speakers_apart_boosts_the_first_named() -> None:
    boosted = apply_speaker_boost(HITS, "What did Nate recommend to Joanna?", 1.0)
    assert ids(boosted) == ["joanna-1", "nate-1", "nate-2", "plain"]
    assert [round(hit.score, 3) for hit in boosted] == [0.9, 0.8, 0.7, 0.5]
    boosted = apply_speaker_boost(HITS, "What did Joanna recommend to Nate?", 1.0)
    assert [(hit.memory.id, round(hit.score, 3)) for hit in boosted] == [
        ("joanna-1", 0.95),
        ("nate-1", 0.6),
        ("plain", 0.5),
        ("nate-2", 0.4),
    ]


def test_without_subject_of_several_only_a_query_naming_one_speaker_is_boosted(monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(hybrid, "SUBJECT_OF_SEVERAL", False)
    assert apply_speaker_boost(HITS, "What did Nate recommend to Joanna?", 1.0) == HITS
    assert ids(apply_speaker_boost(HITS, "What did Nate recommend?", 1.0)) == ["joanna-1", "nate-1", "nate-2", "plain"]
