"""No request can flood the store or the worker (the ``limits`` settings), against a running
Mnemo: a chat is always answered and the worker skips (and counts) what is over the limits; the
Memory API and the mem0-compatible add answer a clear 400 or a 429 with Retry-After instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mnemo.models import utcnow
from mnemo.write_quota import seconds_left
from tests.conftest import wait_until
from tests.support.probes import Gateways, drain, enqueued, metric, new_user, stored_texts, sync_client
from tests.support.servers import MnemoThread

RAW = {"mode": "raw"}
PER_MINUTE = 5


@pytest.fixture
def api(gateways: Gateways) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateways.get(extraction=RAW).url, timeout=30) as client:
        yield client


def skipped(mnemo: MnemoThread, reason: str) -> float:
    return metric(mnemo, "mnemo_worker_memories_skipped_total", reason=reason)


def user_turn(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for text in texts]


def fresh_window() -> None:
    """Start the test's writes early in a quota window, so they all count in the same minute."""
    left = seconds_left(utcnow())
    if left < 10:
        time.sleep(left + 0.05)


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    message: str = error["message"]
    return message


def test_a_raw_chat_of_two_thousand_user_messages_is_answered_and_stores_only_the_cap(gateways: Gateways) -> None:
    mnemo = gateways.get(extraction=RAW)
    user, before = new_user(), skipped(mnemo, "per_exchange")
    messages = user_turn(*(f"I noted detail number {n} of my trip" for n in range(2000)))  # ~0.1 MB

    with sync_client(mnemo, user) as client:
        reply = client.chat.completions.create(model="gpt-test", messages=messages)  # type: ignore[arg-type]

    assert reply.choices[0].message.content
    wait_until(lambda: skipped(mnemo, "per_exchange") - before == 1980)
    drain(mnemo)
    assert stored_texts(mnemo, user) == sorted(f"I noted detail number {n} of my trip" for n in range(1980, 2000))


def test_a_write_with_more_messages_than_the_limit_is_a_400_on_the_api_and_the_mem0_add(
    gateways: Gateways, api: httpx.Client
) -> None:
    mnemo = gateways.get(extraction=RAW)
    user, queued = new_user(), enqueued(mnemo)
    too_many = user_turn(*(f"I like fruit {n}" for n in range(101)))
    writes = [
        ("/v1/memories", {"user_id": user, "messages": too_many}),
        ("/v1/memories", {"user_id": user, "messages": too_many, "infer": False}),
        ("/mem0/v3/memories/add/", {"user_id": user, "messages": too_many}),
        ("/mem0/v3/memories/add/", {"user_id": user, "messages": too_many, "infer": False}),
    ]
    for path, body in writes:
        message = assert_error(api.post(path, json=body), 400, "too_many_messages", "messages")
        assert "101 messages" in message and "limits.max_messages_per_write" in message

    long_fact = {"user_id": user, "facts": ["short", "x" * 4001]}
    message = assert_error(api.post("/v1/memories", json=long_fact), 400, "memory_too_long", "facts[1]")
    assert "4001 characters" in message
    verbatim = {"user_id": user, "messages": user_turn("ok", "y" * 4001), "infer": False}
    assert_error(api.post("/mem0/v3/memories/add/", json=verbatim), 400, "memory_too_long", "messages[1].content")

    assert api.post("/v1/memories", json={"user_id": user, "messages": too_many[:100]}).status_code == 202
    drain(mnemo)
    assert enqueued(mnemo) == queued and len(stored_texts(mnemo, user)) == 20  # per-exchange cap


def test_a_user_writing_faster_than_the_rate_gets_429s_on_the_api_and_skips_on_the_chat_path(
    gateways: Gateways,
) -> None:
    mnemo = gateways.get(extraction=RAW, limits={"memories_per_user_per_minute": PER_MINUTE})
    with httpx.Client(base_url=mnemo.url, timeout=30) as api:
        assert_rate_limited(mnemo, api)


def assert_rate_limited(mnemo: MnemoThread, api: httpx.Client) -> None:
    chatter, writer, before = new_user(), new_user(), skipped(mnemo, "rate_limited")
    fresh_window()

    assert api.post("/v1/memories", json={"user_id": writer, "facts": ["a1", "a2", "a3"]}).status_code == 201
    over = api.post("/v1/memories", json={"user_id": writer, "facts": ["a4", "a5", "a6"]})
    assert_error(over, 429, "rate_limited")
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert api.post("/v1/memories", json={"user_id": writer, "facts": ["a4", "a5"]}).status_code == 201  # all of it
    for path, body in [
        ("/v1/memories", {"user_id": writer, "facts": ["a6"]}),
        ("/v1/memories", {"user_id": writer, "messages": user_turn("I like tea")}),  # to the worker
        ("/mem0/v3/memories/add/", {"user_id": writer, "messages": user_turn("I like tea"), "infer": False}),
        ("/mem0/v3/memories/add/", {"user_id": writer, "messages": user_turn("I like tea")}),
    ]:
        assert_error(api.post(path, json=body), 429, "rate_limited")
    assert stored_texts(mnemo, writer) == ["a1", "a2", "a3", "a4", "a5"]

    with sync_client(mnemo, chatter) as client:
        for turn in (["c1", "c2", "c3"], ["c4", "c5", "c6", "c7"]):
            reply = client.chat.completions.create(model="gpt-test", messages=user_turn(*turn))  # type: ignore[arg-type]
            assert reply.choices[0].message.content  # the chat is answered whatever its memories
    wait_until(lambda: skipped(mnemo, "rate_limited") - before == 2)
    drain(mnemo)
    assert stored_texts(mnemo, chatter) == ["c1", "c2", "c3", "c6", "c7"]  # a raw turn keeps its newest
    # The chat path and the API count against the same quota.
    assert_error(api.post("/v1/memories", json={"user_id": chatter, "facts": ["c8"]}), 429, "rate_limited")
