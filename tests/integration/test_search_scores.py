"""Search scores stay within 0..1 on every path that hands them out: a memory searched with its
exact own text (ranked first by meaning and by keywords) scored 1.000000010979803 before the
store clamped it, in the memory API and in the mem0-compatible search alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mnemo.config import Settings
from tests.support.probes import running
from tests.support.servers import MnemoThread

OWN_TEXT = "I keep three beehives on the roof of my flat in Lisbon"
OTHERS = ["My sister lives in Porto", "I play the cello on Sundays", "Bees scare my neighbour"]


@pytest.fixture
def mnemo(make_settings: Callable[..., Settings]) -> Iterator[MnemoThread]:
    # The embedded store (Qdrant Edge sums fused scores in float32; qdrant-client's local mode, the
    # tests' server stand-in, sums in float64 and never showed the overshoot) with the default
    # fusion (rrf, k = 5, keyword weight 2); every memory found, however unrelated.
    settings = make_settings(store="edge", extraction="raw", memory={"score_threshold": -1.0})
    with running(settings) as started:
        yield started


def scores(hits: list[dict[str, Any]], text_key: str) -> dict[str, float]:
    return {hit[text_key]: hit["score"] for hit in hits}


def test_a_memory_searched_with_its_exact_own_text_scores_at_most_one_in_both_search_apis(
    mnemo: MnemoThread,
) -> None:
    with httpx.Client(base_url=mnemo.url, timeout=30) as api:
        added = api.post("/v1/memories", json={"user_id": "bea", "facts": [OWN_TEXT, *OTHERS]})
        assert added.status_code == 201, added.text
        own = api.post("/v1/memories/search", json={"query": OWN_TEXT, "user_id": "bea"})
        mem0 = api.post("/mem0/v3/memories/search/", json={"query": OWN_TEXT, "filters": {"user_id": "bea"}})
    assert own.status_code == 200 and mem0.status_code == 200, (own.text, mem0.text)
    for found in (scores(own.json()["data"], "text"), scores(mem0.json()["results"], "memory")):
        assert set(found) == {OWN_TEXT, *OTHERS}
        assert all(0.0 <= score <= 1.0 for score in found.values()), found
        assert found[OWN_TEXT] == 1.0  # first by both signals: exactly the top of the scale
