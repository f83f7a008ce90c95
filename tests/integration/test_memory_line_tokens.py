"""Every write of a memory's text stores the cl100k count of its injected line with it
(``Memory.line_tokens``, mnemo.memory_line), on both stores, so the gateway budgets memories
without loading tiktoken: facts and verbatim messages over REST and the mem0 API, corrections (the
new text's count, never the old one's), and what the worker writes (messages with inference,
imports). The count is read from the store: the API's JSON does not show it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mnemo.memory_line import count_line_tokens
from mnemo.models import Memory, Scope
from tests.conftest import wait_until
from tests.support.probes import Gateways, new_user
from tests.support.servers import MnemoThread

RAW = {"mode": "raw"}
# Texts whose counts differ, one with what quoting escapes (its line is longer than its text).
AUSTIN, DENVER = "I live in Austin", "I moved to Denver, Colorado, last spring with my two kids"
ESCAPED = "Likes <b>tea</b> & 🙂 \u2028 more"


@pytest.fixture(scope="module", params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest) -> str:
    """Module-scoped, so that pytest runs every test of one store before the other's."""
    return str(request.param)


@pytest.fixture
def mnemo(gateways: Gateways, store: str) -> MnemoThread:
    return gateways.get(store=store, extraction=RAW)


@pytest.fixture
def api(mnemo: MnemoThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mnemo.url, timeout=30) as client:
        yield client


def stored(mnemo: MnemoThread, user: str) -> dict[str, Memory]:
    found = mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True, limit=100))
    return {memory.text: memory for memory in found}


def assert_counted(memories: dict[str, Memory], *texts: str) -> None:
    assert sorted(memories) == sorted(texts)
    assert {text: memories[text].line_tokens for text in texts} == {text: count_line_tokens(text) for text in texts}
    assert all(isinstance(memory.line_tokens, int) for memory in memories.values())


def post(api: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = api.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_facts_and_verbatim_messages_over_rest_store_their_count(mnemo: MnemoThread, api: httpx.Client) -> None:
    user = new_user("facts")
    post(api, "/v1/memories", {"user_id": user, "facts": [AUSTIN, ESCAPED]})
    post(api, "/v1/memories", {"user_id": user, "messages": [{"role": "user", "content": DENVER}], "infer": False})
    assert_counted(stored(mnemo, user), AUSTIN, ESCAPED, DENVER)
    listed = api.get("/v1/memories", params={"user_id": user}).json()["data"]
    assert all("line_tokens" not in memory for memory in listed)


def test_a_correction_stores_the_new_texts_count_and_the_old_version_keeps_its_own(
    mnemo: MnemoThread, api: httpx.Client
) -> None:
    user = new_user("correct")
    (austin,) = post(api, "/v1/memories", {"user_id": user, "facts": [AUSTIN]})["data"]
    patched = api.patch(f"/v1/memories/{austin['id']}", json={"text": DENVER})
    assert patched.status_code == 200, patched.text
    assert count_line_tokens(AUSTIN) != count_line_tokens(DENVER)
    assert_counted(stored(mnemo, user), AUSTIN, DENVER)


def test_the_mem0_api_add_and_update_store_their_count(mnemo: MnemoThread, api: httpx.Client) -> None:
    user = new_user("mem0")
    body = {"user_id": user, "messages": [{"role": "user", "content": AUSTIN}], "infer": False}
    (added,) = post(api, "/mem0/v3/memories/add/", body, status=200)["results"]
    updated = api.put(f"/mem0/v1/memories/{added['id']}/", json={"text": ESCAPED})
    assert updated.status_code == 200, updated.text
    assert_counted(stored(mnemo, user), AUSTIN, ESCAPED)


def test_what_the_worker_writes_stores_its_count(mnemo: MnemoThread, api: httpx.Client) -> None:
    user = new_user("worker")
    message = {"role": "user", "content": AUSTIN}
    post(api, "/v1/memories", {"user_id": user, "messages": [message], "infer": True}, status=202)
    imported = post(api, "/v1/imports", {"user_id": user, "mode": "raw"})
    exchange = {"conversation_id": "c", "id": "m1", "messages": [{"role": "user", "content": ESCAPED}]}
    post(api, f"/v1/imports/{imported['id']}/exchanges", {"user_id": user, "exchanges": [exchange]}, status=200)
    wait_until(lambda: len(stored(mnemo, user)) == 2)
    assert_counted(stored(mnemo, user), AUSTIN, ESCAPED)
