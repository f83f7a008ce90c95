"""One contract, two backends: every MemoryStore behaviour is checked on qdrant-edge and on
qdrant-client's local mode (the server API emulated in-process)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mnemo.config import StoreSettings
from mnemo.errors import StoreError, StoreMismatchError
from mnemo.models import Memory, MemoryEvent, Scope
from mnemo.store.base import MemoryStore, StoreIdentity
from mnemo.store.dense_cache import DenseCache
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.server import QdrantServerMemoryStore

DIM = 8
IDENTITY = StoreIdentity(embedder_model="test-embedder", dimension=DIM)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

MakeStore = Callable[..., MemoryStore]


def vec(*head: float) -> list[float]:
    return [*head, *([0.0] * (DIM - len(head)))]


def memory(text: str, *, user: str = "u1", at: int = 0, **fields: Any) -> Memory:
    fields.setdefault("id", str(uuid.uuid4()))
    return Memory(text=text, user_id=user, created_at=T0 + timedelta(seconds=at), **fields)


def event(memory_id: str, *, user: str = "u1", at: int = 0, **fields: Any) -> MemoryEvent:
    fields.setdefault("id", str(uuid.uuid4()))
    fields.setdefault("action", "ADD")
    return MemoryEvent(memory_id=memory_id, user_id=user, created_at=T0 + timedelta(seconds=at), **fields)


async def put(store: MemoryStore, *memories: Memory, vector: list[float] | None = None) -> None:
    await store.upsert(memories, [vector or vec(1.0) for _ in memories])


def ids(items: list[Memory]) -> list[str]:
    return [item.id for item in items]


class CachedEdgeStore(EdgeMemoryStore):
    """An embedded store whose users' vectors are in the dense cache from their first memory on,
    so every search of the contract goes through the cache, and every later write through its hooks."""

    def __init__(self, path: Path, identity: StoreIdentity) -> None:
        super().__init__(
            path, "mnemo", identity, dense_cache=DenseCache(identity.dimension, min_memories=1, max_bytes=2**30)
        )

    async def upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        await super().upsert(memories, vectors)
        for user_id in {memory.user_id for memory in memories}:
            await super().search(Scope(user_id=user_id), vectors[0], limit=1)  # starts loading the user's vectors
            await self.wait_for_vector_loads()
            assert self._dense is not None and self._dense.searched(user_id) is not None


@pytest.fixture(params=["edge", "edge-cached", "local"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    def make(identity: StoreIdentity = IDENTITY) -> MemoryStore:
        if request.param == "edge":
            return EdgeMemoryStore(tmp_path / "edge", "mnemo", identity)
        if request.param == "edge-cached":
            return CachedEdgeStore(tmp_path / "edge", identity)
        settings = StoreSettings(kind="qdrant", path=str(tmp_path / "local"), collection="mnemo")
        return QdrantServerMemoryStore(settings, identity)

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[MemoryStore]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


async def test_upsert_then_get_round_trips_every_field_with_aware_datetimes(store: MemoryStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    original = Memory(
        id=str(uuid.uuid4()),
        text="Prefers window seats",
        user_id="u1",
        agent_id="travel",
        session_id="s1",
        created_at=datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=plus_two),
        invalid_at=datetime(2026, 4, 1, 9, 0, tzinfo=UTC),
        superseded_by="m-next",
        supersedes="m-prev",
        version=3,
        source_request_id="req-1",
        actor="api",
        metadata={"topic": "travel", "tags": ["seat", "flight"], "nested": {"n": 1}},
    )
    await put(store, original)

    loaded = await store.get(original.id)

    assert loaded == original
    assert loaded.created_at.tzinfo is not None and loaded.invalid_at is not None
    assert loaded.created_at.utcoffset() == timedelta(hours=2)
    assert await store.get(str(uuid.uuid4())) is None


async def test_ids_that_are_not_uuids_still_work(store: MemoryStore) -> None:
    await put(store, memory("plain id", id="memory-1"))

    loaded = await store.get("memory-1")

    assert loaded is not None and loaded.id == "memory-1"


async def test_search_returns_only_the_scope_users_valid_memories_sorted_by_score(store: MemoryStore) -> None:
    near, middle, far = memory("near"), memory("middle"), memory("far")
    invalid = memory("invalid", invalid_at=T0)
    stranger = memory("other user", user="u2")
    await store.upsert([near, middle, far], [vec(1.0, 0.1), vec(1.0, 1.0), vec(0.0, 1.0)])
    await put(store, invalid, stranger, vector=vec(1.0))

    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10)

    assert [hit.memory.id for hit in found] == [near.id, middle.id, far.id]
    assert [hit.score for hit in found] == sorted((hit.score for hit in found), reverse=True)
    assert found[0].score == pytest.approx(1.0, abs=0.01)


async def test_search_respects_the_limit(store: MemoryStore) -> None:
    await put(store, *(memory(f"m{i}") for i in range(5)))

    assert len(await store.search(Scope(user_id="u1"), vec(1.0), limit=2)) == 2


async def test_search_with_an_agent_sees_its_own_and_shared_memories(store: MemoryStore) -> None:
    own, other, shared = memory("own", agent_id="a1"), memory("other", agent_id="a2"), memory("shared")
    await put(store, own, other, shared)

    with_agent = await store.search(Scope(user_id="u1", agent_id="a1"), vec(1.0), limit=10)
    without_agent = await store.search(Scope(user_id="u1"), vec(1.0), limit=10)

    assert {hit.memory.id for hit in with_agent} == {own.id, shared.id}
    assert {hit.memory.id for hit in without_agent} == {own.id, other.id, shared.id}


async def test_find_texts_returns_the_valid_verbatim_twins_the_scope_sees(store: MemoryStore) -> None:
    twin, shouted = memory("I live in Denver"), memory("  i LIVE in   denver ", agent_id="a1")
    others = [
        memory("I live in Denver.", at=1),  # punctuation makes it another text
        memory("I live in Denver", invalid_at=T0 + timedelta(hours=1)),
        memory("I live in Denver", user="u2"),
        memory("I live in Denver", agent_id="a2"),
        memory("I own a kayak"),
    ]
    await put(store, twin, shouted, *others)

    found = await store.find_texts(Scope(user_id="u1", agent_id="a1"), ["I LIVE IN DENVER", "I grow tomatoes"])

    assert sorted(ids(found)) == sorted([twin.id, shouted.id])
    assert await store.find_texts(Scope(user_id="u1"), []) == []


async def test_search_can_include_invalidated_memories(store: MemoryStore) -> None:
    valid, invalid = memory("valid"), memory("invalid", invalid_at=T0)
    await put(store, valid, invalid)

    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10, include_invalidated=True)

    assert {hit.memory.id for hit in found} == {valid.id, invalid.id}


async def test_search_rejects_a_vector_of_the_wrong_dimension(store: MemoryStore) -> None:
    with pytest.raises(StoreError, match="dimensions"):
        await store.search(Scope(user_id="u1"), [1.0, 0.0], limit=3)
    with pytest.raises(StoreError, match="dimensions"):
        await store.upsert([memory("short")], [[1.0]])


async def test_invalidate_records_when_and_by_what_and_hides_from_search(store: MemoryStore) -> None:
    old, new = memory("lives in Paris"), memory("lives in Lyon", at=10)
    await put(store, old, new)
    when = T0 + timedelta(seconds=10)

    await store.invalidate(old.id, when, new.id)

    loaded = await store.get(old.id)
    assert loaded is not None and loaded.invalid_at == when and loaded.superseded_by == new.id
    assert loaded.text == "lives in Paris" and not loaded.is_valid
    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10)
    assert [hit.memory.id for hit in found] == [new.id]


async def test_a_memorys_line_token_count_is_stored_and_read_back_by_every_read(store: MemoryStore) -> None:
    counted, old = memory("lives in Paris", line_tokens=5), memory("stored before counts were", at=1)
    await put(store, counted, old)
    scope, expected = Scope(user_id="u1"), {counted.id: 5, old.id: None}

    found = await store.search(scope, vec(1.0), limit=10)
    assert {hit.memory.id: hit.memory.line_tokens for hit in found} == expected
    assert {m.id: m.line_tokens for m in await store.list(scope)} == expected
    assert [m.line_tokens for m in await store.find_texts(scope, ["lives in Paris"])] == [5]
    # Changes that leave the text alone leave its count alone.
    await store.set_expiry(counted.id, T0 + timedelta(days=3650))
    await store.invalidate(counted.id, T0 + timedelta(seconds=5), None)
    loaded = await store.get(counted.id)
    assert loaded is not None and loaded.line_tokens == 5 and not loaded.is_valid


async def test_invalidating_an_unknown_memory_is_a_no_op(store: MemoryStore) -> None:
    await store.invalidate(str(uuid.uuid4()), T0, None)

    assert await store.list(Scope(user_id="u1"), include_invalidated=True) == []


async def test_list_is_newest_first_and_paginates(store: MemoryStore) -> None:
    made = [memory(f"m{i}", at=i) for i in range(5)]
    await put(store, *made)
    scope = Scope(user_id="u1")

    pages = [await store.list(scope, limit=2, offset=offset) for offset in (0, 2, 4, 6)]

    assert [ids(page) for page in pages] == [[made[4].id, made[3].id], [made[2].id, made[1].id], [made[0].id], []]


async def test_list_hides_invalidated_unless_asked(store: MemoryStore) -> None:
    valid, invalid = memory("valid"), memory("invalid", invalid_at=T0 + timedelta(seconds=5), at=1)
    await put(store, valid, invalid)
    scope = Scope(user_id="u1")

    assert ids(await store.list(scope)) == [valid.id]
    assert ids(await store.list(scope, include_invalidated=True)) == [invalid.id, valid.id]


async def test_list_as_of_returns_what_was_valid_at_that_moment(store: MemoryStore) -> None:
    old, new = memory("old"), memory("new", at=10)
    await put(store, old, new)
    await store.invalidate(old.id, T0 + timedelta(seconds=10), new.id)
    scope = Scope(user_id="u1")

    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    assert ids(await store.list(scope, as_of=at(-1))) == []
    assert ids(await store.list(scope, as_of=at(0))) == [old.id]
    assert ids(await store.list(scope, as_of=at(5))) == [old.id]
    assert ids(await store.list(scope, as_of=at(10))) == [new.id]
    assert ids(await store.list(scope, as_of=at(15), include_invalidated=False)) == [new.id]


async def test_list_filters_by_creation_time(store: MemoryStore) -> None:
    made = [memory(f"m{i}", at=i * 10) for i in range(4)]
    await put(store, *made)
    scope = Scope(user_id="u1")

    five, twenty_five = T0 + timedelta(seconds=5), T0 + timedelta(seconds=25)

    after = await store.list(scope, created_after=five)
    before = await store.list(scope, created_before=twenty_five)
    between = await store.list(scope, created_after=five, created_before=twenty_five)

    assert ids(after) == [made[3].id, made[2].id, made[1].id]
    assert ids(before) == [made[2].id, made[1].id, made[0].id]
    assert ids(between) == [made[2].id, made[1].id]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"topic": "food"}, ["a", "b"]),
        ({"topic": "food", "stars": 5}, ["a"]),
        ({"pinned": True}, ["b", "c"]),
        ({"pinned": False, "topic": "food"}, ["a"]),
        ({"weight": 0.5}, ["c"]),
        ({"dotted.key": "yes"}, ["c"]),
        ({"note": None}, ["b"]),
        ({"topic": "nothing"}, []),
    ],
)
async def test_list_matches_metadata_by_equality(
    store: MemoryStore, metadata: dict[str, Any], expected: list[str]
) -> None:
    a = memory("a", id="a", at=3, metadata={"topic": "food", "stars": 5, "pinned": False})
    b = memory("b", id="b", at=2, metadata={"topic": "food", "stars": 3, "pinned": True, "note": None})
    c = memory("c", id="c", at=1, metadata={"topic": "work", "pinned": True, "weight": 0.5, "dotted.key": "yes"})
    await put(store, a, b, c)

    assert ids(await store.list(Scope(user_id="u1"), metadata=metadata)) == expected


async def test_list_paginates_under_a_boolean_metadata_filter(store: MemoryStore) -> None:
    made = [memory(f"m{i}", at=i, metadata={"pinned": i % 2 == 0}) for i in range(6)]
    await put(store, *made)

    page = await store.list(Scope(user_id="u1"), metadata={"pinned": True}, limit=2, offset=1)

    assert ids(page) == [made[2].id, made[0].id]


async def test_list_matches_agent_and_session_exactly(store: MemoryStore) -> None:
    own = memory("own", agent_id="a1", session_id="s1")
    later = memory("later session", agent_id="a1", session_id="s2", at=1)
    shared = memory("shared", session_id="s1", at=2)
    await put(store, own, later, shared)

    assert ids(await store.list(Scope(user_id="u1", agent_id="a1"))) == [later.id, own.id]
    assert ids(await store.list(Scope(user_id="u1", session_id="s1"))) == [shared.id, own.id]
    assert ids(await store.list(Scope(user_id="u1", agent_id="a1", session_id="s1"))) == [own.id]
    assert ids(await store.list(Scope(user_id="u1"))) == [shared.id, later.id, own.id]


async def test_events_are_listed_oldest_first_by_user_and_by_memory(store: MemoryStore) -> None:
    second = event("m1", at=5, action="UPDATE", old_text="a", new_text="b")
    first = event("m1", at=0, new_text="a", agent_id="a1", reason="said so", model="gpt", actor="worker")
    other_memory = event("m2", at=3)
    other_user = event("m1", user="u2", at=1)
    await store.add_events([second, first, other_memory, other_user])

    assert await store.list_events("u1") == [first, other_memory, second]
    assert await store.list_events("u1", memory_id="m1") == [first, second]
    assert await store.list_events("u3") == []


async def test_adding_an_event_twice_keeps_one_copy_of_the_original(store: MemoryStore) -> None:
    original = event("m1", new_text="first write")
    await store.add_events([original])

    await store.add_events([original.model_copy(update={"new_text": "retried write"})])

    assert await store.list_events("u1") == [original]


async def test_delete_user_erases_exactly_that_users_memories_and_events(store: MemoryStore) -> None:
    mine, theirs = [memory("mine", at=i) for i in range(3)], memory("theirs", user="u2")
    await put(store, *mine, theirs)
    await store.add_events([event(m.id) for m in mine] + [event(theirs.id, user="u2")])

    assert await store.delete_user("u1") == (3, 3)

    assert await store.list(Scope(user_id="u1"), include_invalidated=True) == []
    assert await store.list_events("u1") == []
    assert ids(await store.list(Scope(user_id="u2"))) == [theirs.id]
    assert len(await store.list_events("u2")) == 1
    assert await store.delete_user("u1") == (0, 0)


async def test_delete_memories_removes_only_those_ids(store: MemoryStore) -> None:
    keep, drop = memory("keep"), memory("drop", at=1)
    await put(store, keep, drop)

    await store.delete_memories([drop.id, str(uuid.uuid4())])
    await store.delete_memories([])

    assert await store.get(drop.id) is None
    assert ids(await store.list(Scope(user_id="u1"))) == [keep.id]


async def test_delete_memories_erases_the_events_that_carry_their_text(store: MemoryStore) -> None:
    keep, drop = memory("keep"), memory("drop", at=1)
    await put(store, keep, drop)
    await store.add_events([event(keep.id), event(drop.id, at=1), event(drop.id, at=2)])

    await store.delete_memories([drop.id])

    assert [e.memory_id for e in await store.list_events("u1")] == [keep.id]


async def test_upserting_the_same_id_twice_keeps_one_point(store: MemoryStore) -> None:
    first = memory("first version")
    await put(store, first)

    await put(store, first.model_copy(update={"text": "second version"}))

    listed = await store.list(Scope(user_id="u1"))
    assert [m.text for m in listed] == ["second version"]


async def test_data_survives_close_and_reopen(store: MemoryStore, make_store: MakeStore) -> None:
    kept = memory("kept")
    await put(store, kept)
    await store.add_events([event(kept.id)])
    await store.close()

    reopened = make_store()
    await reopened.open()
    try:
        assert await reopened.get(kept.id) == kept
        assert len(await reopened.list_events("u1")) == 1
    finally:
        await reopened.close()


@pytest.mark.parametrize("identity", [StoreIdentity("other-embedder", DIM), StoreIdentity("test-embedder", DIM * 2)])
async def test_opening_with_another_embedder_raises_mismatch(
    store: MemoryStore, make_store: MakeStore, identity: StoreIdentity
) -> None:
    await store.close()

    with pytest.raises(StoreMismatchError, match="test-embedder") as raised:
        await make_store(identity).open()

    assert identity.embedder_model in str(raised.value)


async def test_a_second_open_of_the_same_path_is_refused(store: MemoryStore, make_store: MakeStore) -> None:
    with pytest.raises(StoreError, match="in use by another process"):
        await make_store().open()


async def test_ping_works_while_open_and_fails_after_close(store: MemoryStore) -> None:
    await store.ping()
    await store.close()

    with pytest.raises(StoreError, match="not open"):
        await store.ping()


_CRASH_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from mnemo.store.dense_cache import DenseCache
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.base import StoreIdentity
from mnemo.models import Memory

async def main():
    store = EdgeMemoryStore(Path(sys.argv[1]), "mnemo", StoreIdentity("test-embedder", 8))
    await store.open()
    memory = Memory.model_validate_json(sys.argv[2])
    await store.upsert([memory], [[1.0] + [0.0] * 7])
    os._exit(0)  # like kill -9: no close, no flush

asyncio.run(main())
"""


async def test_edge_upserts_survive_a_crash_without_close(tmp_path: Path) -> None:
    written = memory("written just before the crash")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path), written.model_dump_json()
    )
    assert await process.wait() == 0

    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    try:
        assert await store.get(written.id) == written
    finally:
        await store.close()


_SEARCH_THREADS_SCRIPT = """
import asyncio, sys
from pathlib import Path
from mnemo.store.dense_cache import DenseCache
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.base import StoreIdentity
from mnemo.models import Memory, Scope

async def main():
    store = EdgeMemoryStore(Path(sys.argv[1]), "mnemo", StoreIdentity("test-embedder", 8))
    await store.open()
    memories = [Memory.model_validate_json(line) for line in sys.argv[2:]]
    await store.upsert(memories, [[1.0] + [0.0] * 7 for _ in memories])
    for _ in range(20):
        await store.search(Scope(user_id="u1"), [1.0] + [0.0] * 7, limit=5, query_text="hiking")
    tasks = Path("/proc/self/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
    print(sum(name.startswith("edge-search") for name in names))
    await store.close()

asyncio.run(main())
"""


async def test_an_edge_store_searches_on_one_thread_per_shard(tmp_path: Path) -> None:
    """A shard that is never optimised holds one segment: a pool of search threads would only add
    hand-offs (and CPU) to every search."""
    memories = [memory(f"Enjoys hiking trail {i}").model_dump_json() for i in range(50)]
    for _ in ("created", "reopened"):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SEARCH_THREADS_SCRIPT, str(tmp_path), *memories, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        assert int(out) <= 2  # the memories shard's and the events shard's


# --- hybrid search (dense + BM25 keywords) ----------------------------------------------


async def test_hybrid_search_finds_a_keyword_match_the_dense_vector_misses(store: MemoryStore) -> None:
    dog, hiking = memory("Adopted a greyhound named Pixel"), memory("Enjoys hiking")
    await store.upsert([dog, hiking], [vec(0.0, 1.0), vec(1.0)])

    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10, query_text="greyhound")

    assert [hit.memory.id for hit in found] == [dog.id, hiking.id]
    assert all(0.0 < hit.score <= 1.0 for hit in found)
    assert [hit.score for hit in found] == sorted((hit.score for hit in found), reverse=True)


async def test_hybrid_search_matches_who_said_it(store: MemoryStore) -> None:
    said_by = [memory("I loved the concert", metadata={"speaker": name, "session_date": "2023-05-08"}) for name in "AB"]
    caroline = memory("I loved the concert", metadata={"speaker": "Caroline", "session_date": "2023-05-08"})
    await put(store, *said_by, caroline)

    # The dense vectors tie, and the engine breaks dense ties in no promised order, so the query
    # shares no word with the text: only the speaker in the indexed context line can match.
    query = "What did Caroline say about the show?"
    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=1, query_text=query)

    assert [hit.memory.id for hit in found] == [caroline.id]


async def test_hybrid_search_keeps_to_the_scope_and_to_valid_memories(store: MemoryStore) -> None:
    mine, old, theirs = memory("tea"), memory("tea", invalid_at=T0), memory("tea", user="u2")
    other = memory("coffee")
    await store.upsert([mine, old, theirs, other], [vec(0.0, 1.0)] * 3 + [vec(1.0)])

    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10, query_text="tea")
    everything = await store.search(Scope(user_id="u1"), vec(1.0), limit=10, query_text="tea", include_invalidated=True)

    assert {hit.memory.id for hit in found} == {mine.id, other.id}
    assert {hit.memory.id for hit in everything} == {mine.id, old.id, other.id}


async def test_the_score_threshold_is_a_floor_on_dense_similarity_only(store: MemoryStore) -> None:
    near, far_keyword, far = memory("near"), memory("Pixel the greyhound"), memory("far")
    await store.upsert([near, far_keyword, far], [vec(1.0), vec(0.0, 1.0), vec(0.0, 1.0)])
    scope = Scope(user_id="u1")

    dense = await store.search(scope, vec(1.0), limit=10, score_threshold=0.5)
    hybrid = await store.search(scope, vec(1.0), limit=10, score_threshold=0.5, query_text="greyhound")

    assert [hit.memory.id for hit in dense] == [near.id]
    assert {hit.memory.id for hit in hybrid} == {near.id, far_keyword.id}


async def test_a_query_of_stop_words_searches_by_meaning_alone(store: MemoryStore) -> None:
    near, far = memory("near"), memory("far")
    await store.upsert([near, far], [vec(1.0), vec(0.0, 1.0)])

    found = await store.search(Scope(user_id="u1"), vec(1.0), limit=10, query_text="what is the")

    assert [hit.memory.id for hit in found] == [near.id, far.id]
    assert found[0].score == pytest.approx(1.0, abs=0.01)


async def test_an_edge_store_made_before_hybrid_search_gets_keywords_on_open(tmp_path: Path) -> None:
    import qdrant_edge as qe

    from mnemo.store import payload as pl

    old = memory("Adopted a greyhound")
    shard_dir = tmp_path / "mnemo" / "memories"
    shard_dir.mkdir(parents=True)
    dense = qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)
    shard = qe.EdgeShard.load(str(shard_dir), qe.EdgeConfig(vectors={pl.DENSE_VECTOR: dense}))
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(pl.point_id(old.id), {"dense": vec(0.0, 1.0)}, pl.memory_payload(old))]
        )
    )
    shard.close()

    store = EdgeMemoryStore(tmp_path, "mnemo", IDENTITY)
    await store.open()
    try:
        await put(store, memory("Enjoys hiking"))
        found = await store.search(Scope(user_id="u1"), vec(1.0), limit=1, query_text="greyhound")
    finally:
        await store.close()

    assert [hit.memory.id for hit in found] == [old.id]


async def test_memories_stored_before_text_hashes_get_them_on_open(store: MemoryStore, make_store: MakeStore) -> None:
    old = memory("Adopted a greyhound")
    await put(store, old)
    await drop_text_hash(store, old.id)
    assert await store.find_texts(Scope(user_id="u1"), [old.text]) == []
    await store.close()

    reopened = make_store()
    await reopened.open()
    try:
        found = await reopened.find_texts(Scope(user_id="u1"), ["adopted a GREYHOUND"])
    finally:
        await reopened.close()
    await store.open()  # the fixture closes it again

    assert ids(found) == [old.id]


async def drop_text_hash(store: MemoryStore, memory_id: str) -> None:
    """Make a point look as written before ``text_hash`` existed."""
    from mnemo.store import payload as pl

    if isinstance(store, EdgeMemoryStore):
        import qdrant_edge as qe

        store._memories.update(qe.UpdateOperation.delete_payload([pl.point_id(memory_id)], [pl.TEXT_HASH]))
    else:
        assert isinstance(store, QdrantServerMemoryStore)
        await store._client.delete_payload("mnemo", [pl.TEXT_HASH], points=[pl.point_id(memory_id)])


async def test_a_local_collection_made_before_hybrid_search_still_opens_and_searches(tmp_path: Path) -> None:
    from qdrant_client import AsyncQdrantClient, models

    client = AsyncQdrantClient(path=str(tmp_path))
    dense = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    await client.create_collection("mnemo", vectors_config={"dense": dense})
    await client.close()
    store = QdrantServerMemoryStore(StoreSettings(kind="qdrant", path=str(tmp_path), collection="mnemo"), IDENTITY)
    await store.open()
    try:
        kept = memory("Adopted a greyhound")
        await put(store, kept)
        found = await store.search(Scope(user_id="u1"), vec(1.0), limit=1, query_text="greyhound")
    finally:
        await store.close()

    assert [hit.memory.id for hit in found] == [kept.id]


async def test_a_memory_of_stop_words_alone_is_kept_and_the_store_reopens(
    store: MemoryStore, make_store: MakeStore
) -> None:
    empty = memory("it is the")
    await put(store, empty)
    await store.close()

    reopened = make_store()
    await asyncio.wait_for(reopened.open(), timeout=30)
    try:
        found = await reopened.search(Scope(user_id="u1"), vec(1.0), limit=5, query_text="what is it")
    finally:
        await reopened.close()

    assert [hit.memory.id for hit in found] == [empty.id]
