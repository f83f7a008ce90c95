"""GET /v1/users (and /v1/users/{id}, and the mem0 SDK's users()) against a running Mnemo with
tenant and admin keys: a tenant lists only its own users, an admin the tenant it names or the
plain ids, by id prefix, paged, with counts and activity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.probes import Gateways
from tests.support.servers import MnemoThread

ACME_KEY, GLOBEX_KEY, ADMIN_KEY = "acme-key-0123456789abcdef", "globex-key-0123456789abcdef", "admin-key-0123456789abc"
AUTH = {
    "admin_keys": [ADMIN_KEY],
    "tenants": [{"id": "acme", "keys": [ACME_KEY]}, {"id": "globex", "keys": [GLOBEX_KEY]}],
}


@pytest.fixture
def mnemo(gateways: Gateways) -> MnemoThread:
    return gateways.get(auth=AUTH)


@pytest.fixture
def tag() -> str:
    """A prefix no other test's users share (the module's Mnemo keeps every test's users)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(mnemo: MnemoThread) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(key: str | None, **headers: str) -> httpx.Client:
        auth = {"X-Mnemo-Api-Key": key} if key else {}
        clients.append(httpx.Client(base_url=mnemo.url, timeout=30, headers={**auth, **headers}))
        return clients[-1]

    yield make
    for made in clients:
        made.close()


def add(api: httpx.Client, user: str, *facts: str) -> list[dict[str, Any]]:
    response = api.post("/v1/memories", json={"user_id": user, "facts": list(facts)})
    assert response.status_code == 201, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def listed(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/v1/users", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_tenant_lists_only_its_own_users_by_prefix_with_counts_and_activity(api: Any, tag: str) -> None:
    acme, globex = api(ACME_KEY), api(GLOBEX_KEY)
    home, _ = add(acme, f"{tag}-alice", "I live in Austin", "I like tea")
    add(acme, f"{tag}-amy", "I play chess")
    add(globex, f"{tag}-alice", "I live in Oslo")
    add(globex, f"{tag}-gus", "I sail")
    corrected = acme.patch(f"/v1/memories/{home['id']}", json={"text": "I live in Denver", "reason": "moved"})
    assert corrected.status_code == 200, corrected.text

    mine = listed(acme, prefix=tag)

    assert [u["user_id"] for u in mine["data"]] == [f"{tag}-alice", f"{tag}-amy"]
    assert (mine["total"], mine["has_more"], mine["complete"]) == (2, False, True)
    alice = mine["data"][0]
    assert (alice["object"], alice["memories"], alice["total_memories"], alice["events"]) == ("user", 2, 3, 3)
    first, last = datetime.fromisoformat(alice["first_activity"]), datetime.fromisoformat(alice["last_activity"])
    assert first.tzinfo is not None and first < last  # the correction came after the first facts
    assert [u["user_id"] for u in listed(globex, prefix=tag)["data"]] == [f"{tag}-alice", f"{tag}-gus"]
    assert [u["user_id"] for u in listed(acme, prefix=f"{tag}-am")["data"]] == [f"{tag}-amy"]


def test_an_admin_lists_the_tenant_it_names_or_else_the_plain_ids_a_page_at_a_time(api: Any, tag: str) -> None:
    admin, acme = api(ADMIN_KEY), api(ACME_KEY)
    for n in range(3):
        add(admin, f"{tag}-plain{n}", "I exist")
    add(acme, f"{tag}-tenanted", "I exist in acme")

    first = listed(admin, prefix=tag, limit=2)
    rest = listed(admin, prefix=tag, limit=2, offset=2)
    in_acme = listed(api(ADMIN_KEY, **{"X-Mnemo-Tenant": "acme"}), prefix=tag)

    assert [u["user_id"] for u in first["data"]] == [f"{tag}-plain0", f"{tag}-plain1"]
    assert (first["total"], first["has_more"]) == (3, True)
    assert [u["user_id"] for u in rest["data"]] == [f"{tag}-plain2"] and rest["has_more"] is False
    assert [u["user_id"] for u in in_acme["data"]] == [f"{tag}-tenanted"]


def test_one_user_is_found_by_its_id_and_another_tenants_is_a_404(api: Any, tag: str) -> None:
    acme, globex = api(ACME_KEY), api(GLOBEX_KEY)
    add(acme, f"{tag}-only-acme", "I exist")
    add(acme, f"{tag}-only-acme2", "I sort after my prefix")

    found = acme.get(f"/v1/users/{tag}-only-acme")
    hidden = globex.get(f"/v1/users/{tag}-only-acme")
    unknown = acme.get(f"/v1/users/{tag}-nobody")

    assert found.status_code == 200 and found.json()["user_id"] == f"{tag}-only-acme"
    assert found.json()["memories"] == 1
    for response in (hidden, unknown):
        assert response.status_code == 404 and response.json()["error"]["code"] == "user_not_found"


def test_a_bad_prefix_or_page_is_a_400_naming_it(api: Any) -> None:
    acme = api(ACME_KEY)
    for params, param in (({"prefix": "acme/x"}, "prefix"), ({"prefix": "a b"}, "prefix"), ({"limit": 0}, "limit")):
        response = acme.get("/v1/users", params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_an_erased_user_is_no_longer_listed_or_found(api: Any, tag: str) -> None:
    acme = api(ACME_KEY)
    add(acme, f"{tag}-gone", "I will be erased")
    add(acme, f"{tag}-stays", "I stay")

    assert acme.delete(f"/v1/users/{tag}-gone").status_code == 200

    assert [u["user_id"] for u in listed(acme, prefix=tag)["data"]] == [f"{tag}-stays"]
    assert acme.get(f"/v1/users/{tag}-gone").status_code == 404


def test_the_mem0_sdks_users_call_lists_the_tenants_users_as_entities(api: Any, tag: str) -> None:
    acme = api(None, Authorization=f"Token {ACME_KEY}")
    add(api(ACME_KEY), f"{tag}-mem0", "I use the mem0 SDK")
    add(api(GLOBEX_KEY), f"{tag}-not-mine", "I am globex's")

    response = acme.get("/mem0/v1/entities/", params={"page_size": 500})

    assert response.status_code == 200, response.text
    body = response.json()
    names = {entity["name"] for entity in body["results"]}
    assert f"{tag}-mem0" in names and f"{tag}-not-mine" not in names
    assert body["count"] == len(body["results"]) and body["next"] is None
    (entity,) = [e for e in body["results"] if e["name"] == f"{tag}-mem0"]
    assert (entity["id"], entity["type"], entity["total_memories"]) == (f"{tag}-mem0", "user", 1)


def test_the_console_files_need_no_key_but_every_api_call_does(mnemo: MnemoThread) -> None:
    with httpx.Client(base_url=mnemo.url, timeout=30) as anonymous:
        page = anonymous.get("/ui")
        script = anonymous.get("/ui/console.js")
        users = anonymous.get("/v1/users")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert users.status_code == 401 and users.json()["error"]["code"] == "missing_api_key"
