"""Access control, request lookups and provable erasure against a running Mnemo with tenant and
admin keys: tenants never see each other's users, another tenant's memory is a 404, the chat
endpoint takes its tenant from the key, and an erased user leaves nothing behind in the store
or in Redis."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest
import redis as redis_sync

from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.probes import EAGER_MEMORY, Gateways, drain, new_user
from tests.support.servers import MnemoThread

ACME_KEY, GLOBEX_KEY, ADMIN_KEY = "acme-key-0123456789abcdef", "globex-key-0123456789abcdef", "admin-key-0123456789abc"
AUTH = {
    "admin_keys": [ADMIN_KEY],
    "tenants": [{"id": "acme", "keys": [ACME_KEY]}, {"id": "globex", "keys": [GLOBEX_KEY]}],
}


@pytest.fixture
def mnemo(gateways: Gateways) -> MnemoThread:
    """One Mnemo for the module; every test has its own users."""
    # No key on the model route: the client's Authorization goes to the upstream (pass-through).
    models = [{"name": "*", "provider": "openai", "base_url": gateways.upstream_url}]
    return gateways.get(extraction={"mode": "raw"}, auth=AUTH, memory=EAGER_MEMORY, models=models)


def client(mnemo: MnemoThread, key: str | None, **headers: str) -> httpx.Client:
    auth = {"X-Mnemo-Api-Key": key} if key else {}
    return httpx.Client(base_url=mnemo.url, timeout=30, headers={**auth, **headers})


def add(api: httpx.Client, user: str, *facts: str) -> list[dict[str, Any]]:
    response = api.post("/v1/memories", json={"user_id": user, "facts": list(facts)})
    assert response.status_code == 201, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def chat(api: httpx.Client, user: str, text: str, **headers: str) -> httpx.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}
    response = api.post("/v1/chat/completions", json=body, headers={"X-Mnemo-User-Id": user, **headers})
    assert response.status_code == 200, response.text
    return response


def test_keys_are_required_checked_and_a_missing_or_wrong_one_is_an_openai_shaped_401(mnemo: MnemoThread) -> None:
    with httpx.Client(base_url=mnemo.url, timeout=30) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-Mnemo-Api-Key": "nope"}):
            response = anonymous.get("/v1/memories", params={"user_id": new_user()}, headers=headers)
            assert response.status_code == 401, response.text
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert (
            anonymous.get("/v1/memories?user_id=a", headers={"Authorization": f"Bearer {ACME_KEY}"}).status_code == 200
        )
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        # On the chat endpoint Authorization is the upstream's key, never a Mnemo key.
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        refused = anonymous.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ACME_KEY}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"


def test_chat_takes_its_tenant_from_the_key_and_passes_authorization_to_the_upstream(
    mnemo: MnemoThread, upstream: Any
) -> None:
    alice = new_user("alice")
    with client(mnemo, ACME_KEY, Authorization="Bearer sk-client") as acme, client(mnemo, GLOBEX_KEY) as globex:
        chat(acme, alice, "I live in Austin", **{"X-Mnemo-Tenant": "globex"})  # the header is ignored
        sent = upstream.of_task("chat")[-1].headers
        assert sent["authorization"] == "Bearer sk-client" and "x-mnemo-api-key" not in sent
        wait_until(lambda: mnemo.call(lambda core: core.store.list(Scope(user_id=f"acme/{alice}"))))
        listed = acme.get("/v1/memories", params={"user_id": alice}).json()["data"]
        assert [(m["text"], m["user_id"]) for m in listed] == [("I live in Austin", alice)]
        assert globex.get("/v1/memories", params={"user_id": alice}).json()["data"] == []
        assert chat(globex, alice, "Where do I live?").headers["x-mnemo-memories"] == "0"


def test_another_tenants_memory_is_a_404_and_the_admin_sees_every_tenant(mnemo: MnemoThread) -> None:
    alice = new_user("alice")
    with client(mnemo, ACME_KEY) as acme, client(mnemo, GLOBEX_KEY) as globex, client(mnemo, ADMIN_KEY) as admin:
        (memory,) = add(acme, alice, "I live in Austin")
        path = f"/v1/memories/{memory['id']}"
        unknown = globex.get("/v1/memories/mem_unknown").json()
        for response in (
            globex.get(path),
            globex.patch(path, json={"text": "hacked"}),
            globex.delete(path),
            globex.delete(path + "?hard=true"),
            globex.get(path + "/history"),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == unknown["error"]["code"] == "memory_not_found"
        assert admin.get(path).json()["user_id"] == f"acme/{alice}"
        scoped = admin.get("/v1/memories", params={"user_id": alice}, headers={"X-Mnemo-Tenant": "acme"})
        assert [m["user_id"] for m in scoped.json()["data"]] == [alice]
        assert acme.get(path).json()["text"] == "I live in Austin"


def test_a_request_id_shows_what_was_injected_into_it_and_what_it_created(mnemo: MnemoThread) -> None:
    alice = new_user("alice")
    with client(mnemo, ACME_KEY) as acme, client(mnemo, GLOBEX_KEY) as globex:
        first = chat(acme, alice, "I live in Austin").headers["x-mnemo-request-id"]
        wait_until(lambda: acme.get(f"/v1/requests/{first}").json().get("created"))
        created = acme.get(f"/v1/requests/{first}").json()
        assert [m["text"] for m in created["created"]] == ["I live in Austin"] and created["user_id"] == alice
        second = chat(acme, alice, "Where do I live?", **{"X-Mnemo-Memory": "read"})
        assert second.headers["x-mnemo-memory-ids"] == created["created"][0]["id"]
        rid = second.headers["x-mnemo-request-id"]
        wait_until(lambda: acme.get(f"/v1/requests/{rid}").status_code == 200)
        lookup = acme.get(f"/v1/requests/{rid}").json()
        assert ([m["text"] for m in lookup["injected"]], lookup["created"]) == (["I live in Austin"], [])
        assert globex.get(f"/v1/requests/{rid}").status_code == 404
        assert acme.get("/v1/requests/req_unknown").status_code == 404


def redis_value(redis_client: redis_sync.Redis, key: bytes) -> Any:
    kind = redis_client.type(key)
    if kind == b"string":
        return redis_client.get(key)
    if kind == b"hash":
        return redis_client.hgetall(key)
    if kind == b"zset":
        return redis_client.zrange(key, 0, -1)
    if kind == b"list":
        return redis_client.lrange(key, 0, -1)
    return redis_client.smembers(key) if kind == b"set" else b""


def redis_mentions(redis_client: redis_sync.Redis, needle: bytes) -> list[str]:
    """Every mnemo:* and arq:* key whose name or value mentions ``needle``."""
    found = []
    for pattern in ("mnemo:*", "arq:*"):
        for key in redis_client.scan_iter(match=pattern):
            if needle in key or needle in repr(redis_value(redis_client, key)).encode():
                found.append(key.decode())
    return found


def seed_user(api: httpx.Client, user: str, city: str) -> list[str]:
    """Memories, a correction, two chats and a queued exchange; returns the chats' request ids."""
    (home,) = add(api, user, f"I work in {city}")
    assert api.patch(f"/v1/memories/{home['id']}", json={"text": f"I work from home in {city}"}).status_code == 200
    first = chat(api, user, f"I live in {city}").headers["x-mnemo-request-id"]
    body = {"user_id": user, "messages": [{"role": "user", "content": f"My cat likes {city}"}], "infer": True}
    assert api.post("/v1/memories", json=body).status_code == 202
    second = chat(api, user, f"What do I do in {city}?", **{"X-Mnemo-Memory": "read"}).headers["x-mnemo-request-id"]
    return [first, second]


def test_erasing_a_user_leaves_nothing_in_any_endpoint_the_store_or_redis_and_spares_bob(
    mnemo: MnemoThread, redis_client: redis_sync.Redis, upstream: Any
) -> None:
    alice, bob = f"alice{uuid.uuid4().hex[:8]}", f"bob{uuid.uuid4().hex[:8]}"
    with client(mnemo, ACME_KEY) as acme:
        alice_requests, bob_requests = seed_user(acme, alice, "Austin"), seed_user(acme, bob, "Oslo")
        drain(mnemo)
        wait_until(lambda: all(acme.get(f"/v1/requests/{r}").status_code == 200 for r in alice_requests))
        ids = [
            m["id"]
            for m in acme.get("/v1/memories", params={"user_id": alice, "include_invalidated": "1"}).json()["data"]
        ]
        assert len(ids) == 4 and redis_mentions(redis_client, alice.encode())

        erased = acme.delete(f"/v1/users/{alice}")
        assert erased.status_code == 200 and erased.json()["memories"] == 4, erased.text

        assert acme.get("/v1/memories", params={"user_id": alice, "include_invalidated": "true"}).json()["data"] == []
        assert acme.post("/v1/memories/search", json={"query": "Austin", "user_id": alice}).json()["data"] == []
        export = acme.get(f"/v1/users/{alice}/export").json()
        assert (export["memories"], export["events"]) == ([], [])
        assert acme.get("/v1/events", params={"user_id": alice}).json()["data"] == []
        assert all(acme.get(f"/v1/memories/{i}/history").status_code == 404 for i in ids)
        assert all(acme.get(f"/v1/requests/{r}").status_code == 404 for r in alice_requests)
        assert mnemo.call(lambda core: core.store.list(Scope(user_id=f"acme/{alice}"), include_invalidated=True)) == []
        assert mnemo.call(lambda core: core.store.list_events(f"acme/{alice}")) == []
        assert redis_mentions(redis_client, alice.encode()) == []

        later = chat(acme, alice, "Where do I live and work?", **{"X-Mnemo-Memory": "read"})
        assert later.headers["x-mnemo-memories"] == "0"
        assert "Austin" not in str(upstream.of_task("chat")[-1].body)

        assert len(acme.get("/v1/memories", params={"user_id": bob}).json()["data"]) == 3
        assert (
            len(mnemo.call(lambda core: core.store.list(Scope(user_id=f"acme/{bob}"), include_invalidated=True))) == 4
        )
        assert all(acme.get(f"/v1/requests/{r}").status_code == 200 for r in bob_requests)


class IsolationModel:
    """What the randomized sequence created: memory id → (tenant, user)."""

    def __init__(self) -> None:
        self.owner: dict[str, tuple[str, str]] = {}

    def check(self, tenant: str, user: str | None, memories: list[dict[str, Any]]) -> None:
        for memory in memories:
            assert self.owner[memory["id"]][0] == tenant, (tenant, memory)
            assert user is None or (memory["user_id"] == user == self.owner[memory["id"]][1]), (user, memory)


def random_op(rng: random.Random, apis: dict[str, httpx.Client], model: IsolationModel, users: tuple[str, ...]) -> None:
    tenant = rng.choice(sorted(apis))
    api, user = apis[tenant], rng.choice(users)
    op = rng.choice(["add", "add", "list", "search", "get", "patch", "delete", "export", "history", "events"])
    known = sorted(model.owner)
    if op == "add" or not known:
        for memory in add(api, user, f"{tenant} {user} fact {rng.randrange(10**6)}"):
            model.owner[memory["id"]] = (tenant, user)
        return
    target = rng.choice(known)
    mine = model.owner[target][0] == tenant
    if op == "list":
        response = api.get("/v1/memories", params={"user_id": user, "include_invalidated": "true"})
        model.check(tenant, user, response.json()["data"])
    elif op == "search":
        response = api.post("/v1/memories/search", json={"query": "fact", "user_id": user, "threshold": -1})
        model.check(tenant, user, response.json()["data"])
    elif op == "export":
        exported = api.get(f"/v1/users/{user}/export").json()
        model.check(tenant, user, exported["memories"])
        assert all(event["user_id"] == user for event in exported["events"])
    elif op == "events":
        assert all(e["user_id"] == user for e in api.get("/v1/events", params={"user_id": user}).json()["data"])
    else:
        by_op = {
            "get": lambda: api.get(f"/v1/memories/{target}"),
            "patch": lambda: api.patch(f"/v1/memories/{target}", json={"text": f"{tenant} fixed {rng.random()}"}),
            "delete": lambda: api.delete(f"/v1/memories/{target}"),
            "history": lambda: api.get(f"/v1/memories/{target}/history"),
        }
        response = by_op[op]()
        assert response.status_code in ((200, 409) if mine else (404,)), (op, tenant, target, response.text)
        if op == "patch" and response.status_code == 200:
            model.owner[response.json()["id"]] = model.owner[target]
        if op == "history" and mine:
            model.check(tenant, None, response.json()["versions"])


def test_a_randomized_sequence_across_two_tenants_never_shows_a_memory_outside_the_callers_scope(
    mnemo: MnemoThread,
) -> None:
    rng, model = random.Random(20261125), IsolationModel()
    users = (new_user("alice"), new_user("bob"), new_user("carol"))  # the same three in both tenants
    with client(mnemo, ACME_KEY) as acme, client(mnemo, GLOBEX_KEY) as globex:
        apis = {"acme": acme, "globex": globex}
        for _ in range(200):
            random_op(rng, apis, model, users)
    assert {tenant for tenant, _ in model.owner.values()} == {"acme", "globex"}
