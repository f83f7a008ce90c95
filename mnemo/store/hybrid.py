"""How dense and keyword results are fused and scored, shared by both backends.

Each backend runs two prefetches (dense nearest neighbours, BM25 sparse) with the scope and
validity filter on each, and fuses them in Qdrant. Fused scores are mapped back onto 0..1 here,
so a hit ranked first by both signals scores 1.0 whatever the fusion, and every score is clamped
to 0..1 (``HybridOptions.relevance``, float32 rounding aside). The caller's score
threshold is a floor on dense similarity (cosine), applied to the dense prefetch only: keyword
matches are found whatever their cosine, which is the point of the keyword side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mnemo import speakers
from mnemo.config import MemorySettings
from mnemo.models import Memory, ScoredMemory

Fusion = Literal["rrf", "dbsf", "dense"]
_SECONDS_PER_DAY = 86400.0
# A query naming two speakers one after the other is about the first ("What advice does Gina give
# to Jon?"): the boost goes to that speaker's memories (mnemo.speakers.subject). Off, only a query
# naming exactly one speaker is boosted. A constant bench/recall switches off to measure it.
SUBJECT_OF_SEVERAL = True


@dataclass(frozen=True)
class HybridOptions:
    fusion: Fusion = "rrf"
    rrf_k: int = 5
    candidates: int = 20  # per prefetch
    keyword_weight: float = 2.0  # RRF weight of the keyword list; the dense list weighs 1.0
    recency_half_life_days: float | None = None
    speaker_boost: float = 0.0  # see apply_speaker_boost

    @classmethod
    def from_settings(cls, memory: MemorySettings) -> HybridOptions:
        return cls(
            fusion=memory.fusion,
            rrf_k=memory.rrf_k,
            candidates=memory.hybrid_candidates,
            keyword_weight=memory.keyword_weight,
            recency_half_life_days=memory.recency_half_life_days,
            speaker_boost=memory.speaker_boost,
        )

    @property
    def weights(self) -> list[float]:
        return [1.0, self.keyword_weight]

    def fetch_limit(self, limit: int) -> int:
        # Recency and the speaker boost re-rank after fusion, so they need more than the final page.
        return max(limit, self.candidates) if self.recency_half_life_days or self.speaker_boost else limit

    def prefetch_limit(self, limit: int) -> int:
        return max(limit, self.candidates)

    def relevance(self, raw: float, *, fused: bool) -> float:
        """A store's raw score as the score Mnemo hands out, in 0..1: a fused score normalised, a
        cosine as is, then clamped. Clamped because Qdrant sums in float32: a memory searched with
        its own text came back as 1.000000010979803 (a cosine can round past 1 the same way). A
        negative cosine (dense search with a negative threshold) reads as 0, unrelated; so would a
        NaN, never expected."""
        score = self.normalise(raw) if fused else raw
        return min(1.0, max(0.0, score))  # max(0.0, nan) is 0.0

    def normalise(self, fused: float) -> float:
        if self.fusion == "rrf":
            # Qdrant's weighted RRF adds 1 / (k - 1 + (rank + 1) / weight) per list, rank from 0.
            return fused / sum(1 / (self.rrf_k - 1 + 1 / weight) for weight in self.weights)
        if self.fusion == "dbsf":
            return fused / 2  # each prefetch contributes at most 1
        return fused


def wants_keywords(options: HybridOptions, query_text: str | None) -> bool:
    return options.fusion != "dense" and bool(query_text and query_text.strip())


def ranked_hits(
    found: Iterable[tuple[Memory, float]],
    options: HybridOptions,
    *,
    fused: bool,
    now: datetime,
    limit: int,
    query_text: str | None = None,
) -> list[ScoredMemory]:
    """A search's answer from the store's (memory, raw score) pairs, best first: the one place both
    backends turn raw scores into Mnemo's 0..1 relevance (then the speaker boost and recency, when
    configured)."""
    hits = [ScoredMemory(memory=memory, score=options.relevance(raw, fused=fused)) for memory, raw in found]
    hits = apply_speaker_boost(hits, query_text, options.speaker_boost)
    return apply_recency(hits, options, now, limit)


def named_speaker(hits: Sequence[ScoredMemory], query_text: str) -> str | None:
    """The speaker (``metadata.speaker`` of a hit) the query is about: the one it names, or with
    SUBJECT_OF_SEVERAL the first of several when the others come later (mnemo.speakers.subject)."""
    found = speakers.speakers_of(hits)
    if SUBJECT_OF_SEVERAL:
        return speakers.subject(query_text, found)
    named = speakers.named(query_text, found)
    return named[0] if len(named) == 1 else None


def apply_speaker_boost(hits: Sequence[ScoredMemory], query_text: str | None, boost: float) -> list[ScoredMemory]:
    """ "What pets does Nate have?" is answered by what Nate said: when the query is about one of
    the hits' speakers (named_speaker), their memories' distance to a perfect score shrinks by
    1 + ``boost`` (so scores stay in 0..1 and keep their order among themselves), then the hits are
    re-ranked. A query about two speakers together ("What do Jon and Gina both like?") or none is
    left as it is. Only memories with ``metadata.speaker`` (imported conversations) are affected."""
    if not boost or not query_text or not hits:
        return list(hits)
    speaker = named_speaker(hits, query_text)
    if speaker is None:
        return list(hits)
    rescored = [
        ScoredMemory(memory=hit.memory, score=1.0 - (1.0 - hit.score) / (1.0 + boost))
        if hit.memory.metadata.get("speaker") == speaker
        else hit
        for hit in hits
    ]
    rescored.sort(key=lambda hit: hit.score, reverse=True)  # stable: ties keep the store's order
    return rescored


def apply_recency(
    hits: Sequence[ScoredMemory], options: HybridOptions, now: datetime, limit: int
) -> list[ScoredMemory]:
    """Halve a memory's score every ``recency_half_life_days`` of age, then re-rank."""
    half_life = options.recency_half_life_days
    if not half_life:
        return list(hits)[:limit]
    rescored = []
    for hit in hits:
        age_days = max(0.0, (now - hit.memory.created_at).total_seconds() / _SECONDS_PER_DAY)
        rescored.append(ScoredMemory(memory=hit.memory, score=hit.score * 0.5 ** (age_days / half_life)))
    rescored.sort(key=lambda hit: hit.score, reverse=True)
    return rescored[:limit]
