"""The dense cache's matrix and bookkeeping, against a brute-force reading of the same rows."""

from __future__ import annotations

import numpy as np

from mnemo.store.dense_cache import DenseCache, Row, UserVectors

DIM = 4


def unit(rng: np.random.Generator) -> list[float]:
    vector = rng.standard_normal(DIM)
    return (vector / np.linalg.norm(vector)).tolist()


def brute_force(
    rows: dict[str, tuple[Row, list[float]]], query: list[float], count: int, agent: str | None, everything: bool
) -> list[str]:
    seen = [
        (float(np.dot(vector, query)), point_id)
        for point_id, (row, vector) in rows.items()
        if (everything or row.valid) and (agent is None or row.agent_id in ("", agent))
    ]
    return [point_id for _, point_id in sorted(seen, reverse=True)[:count]]


def test_nearest_matches_a_brute_force_search_through_growth_updates_invalidations_and_removals() -> None:
    rng = np.random.default_rng(0)
    vectors = UserVectors(DIM, capacity=4)  # grows several times
    truth: dict[str, tuple[Row, list[float]]] = {}
    for n in range(300):
        row = Row(f"p{n}", agent_id=["", "a1", "a2"][n % 3], valid=True)
        vector = unit(rng)
        vectors.put(row, vector)
        truth[row.point_id] = (row, vector)
    for n in range(0, 300, 7):  # rewritten: another agent, another vector
        row = Row(f"p{n}", agent_id="a2", valid=True)
        vectors.put(row, vector := unit(rng))
        truth[row.point_id] = (row, vector)
    for n in range(1, 300, 5):
        vectors.invalidate(f"p{n}")
        row, vector = truth[f"p{n}"]
        truth[row.point_id] = (Row(row.point_id, row.agent_id, valid=False), vector)
    for n in range(2, 300, 2):  # enough removals to pack the rows
        vectors.remove(f"p{n}")
        truth.pop(f"p{n}", None)
    assert len(vectors) == len(truth)
    for _ in range(50):
        query = unit(rng)
        for agent in (None, "a1", "a2", "a3"):
            for everything in (False, True):
                for count in (1, 5, 500):
                    expected = brute_force(truth, query, count, agent, everything)
                    assert vectors.nearest(query, count, agent_id=agent, include_invalidated=everything) == expected


def test_an_empty_or_fully_hidden_user_has_no_nearest() -> None:
    vectors = UserVectors(DIM)
    assert vectors.nearest([1.0, 0, 0, 0], 5, agent_id=None, include_invalidated=False) == []
    vectors.put(Row("p1", "", valid=False), [1.0, 0, 0, 0])
    assert vectors.nearest([1.0, 0, 0, 0], 5, agent_id=None, include_invalidated=False) == []
    assert vectors.nearest([1.0, 0, 0, 0], 5, agent_id=None, include_invalidated=True) == ["p1"]


def test_a_user_is_kept_from_min_memories_on_and_only_if_they_fit() -> None:
    cache = DenseCache(DIM, min_memories=100, max_bytes=200 * DIM * 4)
    assert not cache.worth_keeping(99)
    assert cache.worth_keeping(100)
    assert not cache.worth_keeping(201)  # more than the whole budget
    assert not DenseCache(DIM, min_memories=0, max_bytes=2**20).worth_keeping(10_000)  # 0 turns it off


def test_the_users_searched_least_recently_leave_first_when_the_cache_is_full() -> None:
    one_user = DenseCache(DIM, min_memories=1, max_bytes=0).start("x", 1000).nbytes
    assert one_user < 1200 * (DIM * 4 + 6)  # sized for what the user holds, not a power of two
    cache = DenseCache(DIM, min_memories=1, max_bytes=2 * one_user)
    for user in ("a", "b"):
        cache.loaded(user, cache.start(user, 1000))
    assert cache.searched("a") is not None  # now "b" is the least recently searched
    cache.loaded("c", cache.start("c", 1000))
    assert "b" not in cache
    assert cache.searched("a") is not None and cache.searched("c") is not None


def test_writes_reach_a_user_while_they_load_and_a_dropped_load_is_not_kept() -> None:
    cache = DenseCache(DIM, min_memories=1, max_bytes=2**20)
    loading = cache.start("u1")
    assert cache.searched("u1") is None  # not ready: searches scan meanwhile
    cache.put("u1", Row("p1", "", valid=True), [1.0, 0, 0, 0])
    cache.put("u2", Row("p2", "", valid=True), [1.0, 0, 0, 0])  # not kept: ignored
    cache.invalidate("p1")
    assert "u2" not in cache and loading.nearest([1.0, 0, 0, 0], 1, agent_id=None, include_invalidated=False) == []
    assert cache.loaded("u1", loading) and cache.searched("u1") is loading

    stale = cache.start("u3")
    cache.drop("u3")  # erased while loading
    assert not cache.loaded("u3", stale) and "u3" not in cache
    again = cache.start("u3")
    cache.abandon("u3", stale)  # an old load giving up does not remove a newer one
    assert cache.loaded("u3", again)
