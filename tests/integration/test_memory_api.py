"""The memory REST API against a running Mnemo (gateway + worker, real Redis, real store):
corrections as versions, point-in-time reads, history, search, deletes, erasure and export.

One Mnemo per store serves the module (each test has its own users); what depends on the store
runs on both, the validation of requests (answered before any store is reached) on one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
import redis as redis_sync

from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.probes import Gateways, new_user
from tests.support.servers import MnemoThread

RAW = {"mode": "raw"}


@pytest.fixture(scope="module", params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest) -> str:
    """Module-scoped, so that pytest runs every test of one store before the other's."""
    return str(request.param)


@pytest.fixture
def api(gateways: Gateways, store: str) -> Iterator[httpx.Client]:
    """The memory API of the store's Mnemo."""
    with httpx.Client(base_url=gateways.get(store=store, extraction=RAW).url, timeout=30) as client:
        yield client


@pytest.fixture
def edge_api(gateways: Gateways) -> Iterator[httpx.Client]:
    """For requests refused before they reach a store: one store is enough."""
    with httpx.Client(base_url=gateways.get(extraction=RAW).url, timeout=30) as client:
        yield client


@pytest.fixture
def queue_only(gateways: Gateways) -> MnemoThread:
    """A Mnemo without a worker (what the API enqueues stays queued) and a 1000-byte body limit."""
    return gateways.get(worker=False, extraction=RAW, server={"max_body_bytes": 1000})


def add_facts(api: httpx.Client, user: str, *facts: str, **extra: Any) -> list[dict[str, Any]]:
    response = api.post("/v1/memories", json={"user_id": user, "facts": list(facts), **extra})
    assert response.status_code == 201, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def texts(api: httpx.Client, **params: str) -> list[str]:
    response = api.get("/v1/memories", params=params)
    assert response.status_code == 200, response.text
    return sorted(m["text"] for m in response.json()["data"])


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    return error


def test_a_correction_through_the_api_is_a_new_version_with_its_history_and_point_in_time_reads(
    api: httpx.Client,
) -> None:
    alice = new_user("alice")
    (austin,) = add_facts(api, alice, "I live in Austin")
    assert (austin["version"], austin["actor"], austin["object"]) == (1, "api", "memory")
    time.sleep(0.05)
    before_patch = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    patched = api.patch(f"/v1/memories/{austin['id']}", json={"text": "I moved to Denver", "reason": "user moved"})
    assert patched.status_code == 200, patched.text
    denver = patched.json()
    assert (denver["text"], denver["version"], denver["supersedes"], denver["actor"]) == (
        "I moved to Denver",
        2,
        austin["id"],
        "api",
    )
    old = api.get(f"/v1/memories/{austin['id']}").json()
    assert old["superseded_by"] == denver["id"] and old["invalid_at"] is not None

    for start in (austin["id"], denver["id"]):
        history = api.get(f"/v1/memories/{start}/history").json()
        assert [v["text"] for v in history["versions"]] == ["I live in Austin", "I moved to Denver"]
        assert [e["action"] for e in history["events"]] == ["ADD", "UPDATE"]
        update = history["events"][1]
        assert (update["reason"], update["actor"], update["old_text"]) == ("user moved", "api", "I live in Austin")
        assert update["source_request_id"] == denver["source_request_id"] != austin["source_request_id"]
        assert history["events"][0]["source_request_id"] == austin["source_request_id"]

    assert texts(api, user_id=alice, as_of=before_patch) == ["I live in Austin"]
    assert texts(api, user_id=alice, as_of=datetime.now(UTC).isoformat()) == ["I moved to Denver"]
    assert texts(api, user_id=alice) == ["I moved to Denver"]
    assert texts(api, user_id=alice, include_invalidated="true") == ["I live in Austin", "I moved to Denver"]
    assert_error(api.patch(f"/v1/memories/{austin['id']}", json={"text": "I live in Boston"}), 409)


def test_list_filters_by_metadata_creation_time_and_pages(api: httpx.Client) -> None:
    carol = new_user("carol")
    add_facts(api, carol, "I like tea", metadata={"topic": "food"})
    middle = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    add_facts(api, carol, "I own a bike", "I play chess", metadata={"topic": "hobby"})
    assert texts(api, user_id=carol, **{"metadata.topic": "food"}) == ["I like tea"]
    assert texts(api, user_id=carol, created_after=middle) == ["I own a bike", "I play chess"]
    assert texts(api, user_id=carol, created_before=middle) == ["I like tea"]
    page = api.get("/v1/memories", params={"user_id": carol, "limit": 2, "offset": 2}).json()
    assert (len(page["data"]), page["limit"], page["offset"], page["object"]) == (1, 2, 2, "list")


def test_search_returns_scored_results_of_the_users_own_memories(api: httpx.Client) -> None:
    alice, bob = new_user("alice"), new_user("bob")
    add_facts(api, alice, "I prefer TypeScript", "My dog is called Rex")
    add_facts(api, bob, "I prefer Rust")
    response = api.post("/v1/memories/search", json={"query": "Which language do I like?", "user_id": alice})
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    assert hits[0]["text"] == "I prefer TypeScript"
    assert all(isinstance(h["score"], float) and h["user_id"] == alice for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["score"])
    strict = api.post("/v1/memories/search", json={"query": "language", "user_id": alice, "threshold": 0.99})
    assert strict.json()["data"] == []


def test_soft_delete_invalidates_and_hard_delete_erases_the_whole_chain(api: httpx.Client) -> None:
    dave = new_user("dave")
    (first,) = add_facts(api, dave, "I live in Austin")
    second = api.patch(f"/v1/memories/{first['id']}", json={"text": "I live in Denver"}).json()
    third = api.patch(f"/v1/memories/{second['id']}", json={"text": "I live in Paris"}).json()
    (other,) = add_facts(api, dave, "I like jazz")

    soft = api.delete(f"/v1/memories/{other['id']}")
    assert soft.status_code == 200 and soft.json()["hard"] is False
    assert texts(api, user_id=dave) == ["I live in Paris"]
    assert api.get(f"/v1/memories/{other['id']}").json()["invalid_at"] is not None
    history = api.get(f"/v1/memories/{other['id']}/history").json()
    assert [(e["action"], e["actor"]) for e in history["events"]] == [("ADD", "api"), ("DELETE", "api")]
    assert_error(api.delete(f"/v1/memories/{other['id']}"), 409)

    hard = api.delete(f"/v1/memories/{second['id']}", params={"hard": "true"})
    assert hard.status_code == 200 and hard.json()["deleted"] == 3
    for memory in (first, second, third):
        assert assert_error(api.get(f"/v1/memories/{memory['id']}"), 404)["code"] == "memory_not_found"
    assert texts(api, user_id=dave, include_invalidated="true") == ["I like jazz"]
    erase = api.get("/v1/events", params={"user_id": dave, "limit": 1}).json()["data"][0]
    assert (erase["action"], erase["memory_id"], erase["actor"]) == ("ERASE", second["id"], "api")


def test_erasing_a_user_removes_their_memories_events_and_queued_jobs_but_not_other_users(
    queue_only: MnemoThread, redis_client: redis_sync.Redis
) -> None:
    mnemo, user, bob = queue_only, new_user("alice"), new_user("bob")
    failed_key = f"mnemo:failed:req_{uuid.uuid4().hex}"
    try:
        with httpx.Client(base_url=mnemo.url, timeout=30) as api:
            (home,) = add_facts(api, user, "I live in Austin")
            api.patch(f"/v1/memories/{home['id']}", json={"text": "I moved to Denver"})
            add_facts(api, bob, "I live in Oslo")
            for who in (user, bob):
                body = {"user_id": who, "messages": [{"role": "user", "content": "I have a cat"}], "infer": True}
                assert api.post("/v1/memories", json=body).status_code == 202
            redis_client.hset(failed_key, mapping={"user_id": user, "reason": "test"})

            erased = api.delete(f"/v1/users/{user}")
            assert erased.status_code == 200, erased.text
            counts = erased.json()
            assert (counts["memories"], counts["events"], counts["queued_jobs"], counts["failed_jobs"]) == (2, 2, 1, 1)

            assert texts(api, user_id=user, include_invalidated="true") == []
            assert api.get("/v1/events", params={"user_id": user}).json()["data"] == []
            assert texts(api, user_id=bob) == ["I live in Oslo"]
            assert len(api.get("/v1/events", params={"user_id": bob}).json()["data"]) == 1
        everything = mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True))
        assert everything == [] and mnemo.call(lambda core: core.store.list_events(user)) == []
        assert len(mnemo.call(lambda core: core.store.list(Scope(user_id=bob)))) == 1
        assert not redis_client.exists(failed_key)
        waiting = cast(list[bytes], redis_client.zrange(mnemo.settings.redis.queue_name, 0, -1))
        queued = [job.decode() for job in waiting]
        assert len(queued) == 1
        job = cast(bytes | None, redis_client.get(f"arq:job:{queued[0]}"))
        assert job is not None and bob.encode() in job  # the erased user's scheduled drain went with the erasure
        assert [key for key in redis_client.scan_iter() if user.encode() in key] == []
    finally:
        redis_client.delete(failed_key)
        redis_client.delete(mnemo.settings.redis.queue_name)


def test_export_holds_every_memory_and_event_of_the_user(api: httpx.Client) -> None:
    erin, frank = new_user("erin"), new_user("frank")
    (home,) = add_facts(api, erin, "I live in Austin")
    api.patch(f"/v1/memories/{home['id']}", json={"text": "I live in Denver", "reason": "moved"})
    add_facts(api, frank, "I live in Rome")
    export = api.get(f"/v1/users/{erin}/export")
    assert export.status_code == 200
    document = json.loads(export.content)
    assert sorted(m["text"] for m in document["memories"]) == ["I live in Austin", "I live in Denver"]
    assert [e["action"] for e in document["events"]] == ["ADD", "UPDATE"]
    feed = api.get("/v1/events", params={"user_id": erin, "limit": 1}).json()
    assert [e["action"] for e in feed["data"]] == ["UPDATE"]


def test_messages_are_stored_verbatim_without_inference(api: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "I have two cats"},
        {"role": "assistant", "content": "Nice!"},
        {"role": "user", "content": [{"type": "text", "text": "and a parrot"}]},
    ]
    gina = new_user("gina")
    response = api.post("/v1/memories", json={"user_id": gina, "messages": messages, "infer": False})
    assert response.status_code == 201, response.text
    assert texts(api, user_id=gina) == ["I have two cats", "and a parrot"]
    events = api.get("/v1/events", params={"user_id": gina}).json()["data"]
    assert {(e["action"], e["actor"]) for e in events} == {("ADD", "api")}


def test_messages_with_inference_go_through_the_worker(api: httpx.Client) -> None:
    hank = new_user("hank")
    body = {"user_id": hank, "session_id": "s9", "messages": [{"role": "user", "content": "I play the cello"}]}
    response = api.post("/v1/memories", json={**body, "infer": True})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["job_id"] and accepted["request_id"].startswith("req_")
    wait_until(lambda: texts(api, user_id=hank) == ["I play the cello"])
    (memory,) = api.get("/v1/memories", params={"user_id": hank, "session_id": "s9"}).json()["data"]
    assert memory["source_request_id"] == accepted["request_id"] and memory["actor"] == "worker"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "user_id"),
        ({"user_id": "bad id!"}, "user_id"),
        ({"user_id": "a", "as_of": "yesterday"}, "as_of"),
        ({"user_id": "a", "created_after": "2026-13-01"}, "created_after"),
        ({"user_id": "a", "limit": "0"}, "limit"),
        ({"user_id": "a", "limit": "501"}, "limit"),
        ({"user_id": "a", "limit": "ten"}, "limit"),
        ({"user_id": "a", "offset": "-1"}, "offset"),
        ({"user_id": "a", "include_invalidated": "maybe"}, "include_invalidated"),
        ({"user_id": "a", "agent_id": "no spaces"}, "agent_id"),
        ({"user_id": "a", "metadata.": "x"}, "metadata."),
    ],
)
def test_bad_list_parameters_are_400s_naming_the_parameter(
    edge_api: httpx.Client, params: dict[str, str], param: str
) -> None:
    assert_error(edge_api.get("/v1/memories", params=params), 400, param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"facts": ["x"]}, "user_id"),
        ({"user_id": 5, "facts": ["x"]}, "user_id"),
        ({"user_id": "a", "facts": []}, "facts"),
        ({"user_id": "a", "facts": "x"}, "facts"),
        ({"user_id": "a", "facts": ["x", 3]}, "facts[1]"),
        ({"user_id": "a", "facts": ["x"], "metadata": [1]}, "metadata"),
        ({"user_id": "a"}, "facts"),
        ({"user_id": "a", "messages": [{"role": "user", "content": "x"}], "infer": "no"}, "infer"),
        ({"user_id": "a", "messages": [{"content": "x"}]}, "messages[0]"),
        ({"user_id": "a", "messages": [{"role": "assistant", "content": "x"}], "infer": False}, "messages"),
    ],
)
def test_bad_create_bodies_are_400s_naming_the_field(edge_api: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert_error(edge_api.post("/v1/memories", json=body), 400, param)


def test_unknown_ids_are_404s_and_malformed_requests_are_4xx_never_500(api: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    for request in (
        api.get(f"/v1/memories/{missing}"),
        api.get("/v1/memories/not a real id"),
        api.patch(f"/v1/memories/{missing}", json={"text": "x"}),
        api.delete(f"/v1/memories/{missing}"),
        api.delete(f"/v1/memories/{missing}", params={"hard": "true"}),
        api.get(f"/v1/memories/{missing}/history"),
    ):
        assert assert_error(request, 404)["code"] == "memory_not_found"
    ivan = new_user("ivan")
    (memory,) = add_facts(api, ivan, "I like tea")
    assert_error(api.patch(f"/v1/memories/{memory['id']}", json={"text": ""}), 400, "text")
    assert_error(api.patch(f"/v1/memories/{memory['id']}", json={"text": "x", "reason": 3}), 400, "reason")
    assert_error(api.patch(f"/v1/memories/{memory['id']}", content=b"[1]"), 400)
    assert_error(api.delete(f"/v1/memories/{memory['id']}", params={"hard": "perhaps"}), 400, "hard")
    assert_error(api.post("/v1/memories/search", json={"user_id": ivan}), 400, "query")
    assert_error(api.post("/v1/memories/search", json={"query": "q", "user_id": ivan, "limit": 0}), 400, "limit")
    assert_error(api.post("/v1/memories/search", json={"query": "q", "user_id": "i", "threshold": "hi"}), 400)
    assert_error(api.get("/v1/events"), 400, "user_id")
    assert_error(api.delete("/v1/users/bad%20user"), 400, "user_id")
    assert_error(api.get("/v1/users/bad%20user/export"), 400, "user_id")


def test_oversized_bodies_are_413s(queue_only: MnemoThread) -> None:
    with httpx.Client(base_url=queue_only.url, timeout=30) as api:
        big = {"user_id": "a", "facts": ["x" * 2000]}
        assert assert_error(api.post("/v1/memories", json=big), 413)["code"] == "request_too_large"
        search = {"user_id": "a", "query": "x" * 2000}
        assert_error(api.post("/v1/memories/search", json=search), 413)
