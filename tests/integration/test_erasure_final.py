"""Erasure is final: once ``DELETE /v1/users/{id}`` returns, nothing of that user's earlier
exchanges is written anywhere, whatever state they were in. Each case erases a user while one
of their exchanges is in a given state, lets everything drain, then scans the store, every key
and value of a private Redis (its append-only file too) and every file of the data directory
for the erased words. An exchange sent after the erasure is a new start and is stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from mnemo.config import Settings
from mnemo.models import Scope
from mnemo.user_order import user_key
from tests.conftest import wait_until
from tests.support.files import files_holding
from tests.support.probes import LITELLM_READONLY_WARNING, chat_as, drain, drained, stored_texts
from tests.support.redis_server import RedisServer
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream, clause_facts

pytestmark = LITELLM_READONLY_WARNING
SECRET = "Zanzibarquill"  # in every erased exchange: no trace of it may remain
AFTER = "I collect Vorpalite stones"  # sent after the erasure: a new start, stored


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def mnemo(
    make_settings: Callable[..., Settings], redis_server: RedisServer, upstream: ScriptedUpstream
) -> Iterator[MnemoThread]:
    settings = make_settings(
        extraction="llm",
        redis={"url": redis_server.url, "enqueue_timeout_s": 0.5},
        worker={"retry_base_delay_s": 1.5, "max_jobs": 4},
    )
    thread = MnemoThread(settings).start()
    yield thread
    thread.stop()


def erase(mnemo: MnemoThread, user: str) -> dict[str, int]:
    response = httpx.delete(f"{mnemo.url}/v1/users/{user}", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def redis_holding(redis_server: RedisServer, text: str) -> list[str]:
    """Every key whose name or value holds ``text`` (strings, hashes, lists, sets, sorted sets)."""
    client = redis_sync.Redis.from_url(redis_server.url)
    needle = text.encode()
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            values = key_values(client, key, kind)
            if needle in key or any(needle in value for value in values):
                found.append(key.decode())
        client.bgrewriteaof()
        wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, timeout=20)
    finally:
        client.close()
    return found


def key_values(client: redis_sync.Redis, key: bytes, kind: str) -> list[bytes]:
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "hash":
        return [part for pair in client.hgetall(key).items() for part in pair]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    return []


def assert_no_trace(mnemo: MnemoThread, redis_server: RedisServer, user: str, sent_after: str | None) -> None:
    wait_until(lambda: drained_everywhere(mnemo, redis_server, user), timeout=30)
    if sent_after is not None:
        wait_until(lambda: AFTER in stored_texts(mnemo, user), timeout=20)
    settled(mnemo, redis_server)  # a write that was still coming has landed
    texts = mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True, limit=1000))
    events = mnemo.call(lambda core: core.store.list_events(user))
    assert not [m.text for m in texts if SECRET in m.text]
    assert not [e for e in events if SECRET in f"{e.old_text} {e.new_text}"]
    assert redis_holding(redis_server, SECRET) == []
    mnemo.call(lambda core: core.store.wait_for_erasures())
    data = Path(mnemo.settings.data_dir)
    assert files_holding(data, SECRET) == []
    assert files_holding(redis_server.directory, SECRET) == []


def settled(mnemo: MnemoThread, redis_server: RedisServer) -> None:
    """Nothing more is coming: no job left in the queue (a deferred retry included) and every
    job the worker took finished."""
    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: client.zcard(mnemo.settings.redis.queue_name) == 0, timeout=30)
    finally:
        client.close()
    drain(mnemo)


def drained_everywhere(mnemo: MnemoThread, redis_server: RedisServer, user: str) -> bool:
    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        return drained(mnemo, client, user)
    finally:
        client.close()


def new_user() -> str:
    return f"erin-{uuid.uuid4().hex[:8]}"


def test_erased_while_its_exchange_is_mid_extraction_call_and_another_waits_behind_it(
    mnemo: MnemoThread, redis_server: RedisServer, upstream: ScriptedUpstream
) -> None:
    """(a) mid-extraction and (c) queued behind its predecessor: the drain's LLM answer comes
    back after the erasure, and the next exchange of the user is still pending then."""
    user = new_user()
    upstream.json_delay_s = 2.0
    chat_as(mnemo.url + "/v1", user, f"My cat is called {SECRET} and I live in Oslo")
    chat_as(mnemo.url + "/v1", user, f"My boat is the {SECRET} Two")
    wait_until(lambda: upstream.json_in_flight > 0, timeout=10)  # the first extraction is out
    erased = erase(mnemo, user)
    assert erased["queued_jobs"] >= 1  # the second exchange was still waiting
    upstream.json_delay_s = 0.0
    chat_as(mnemo.url + "/v1", user, AFTER)
    assert_no_trace(mnemo, redis_server, user, AFTER)


def test_erased_while_a_stale_drain_of_the_user_is_queued(
    mnemo: MnemoThread, redis_server: RedisServer, upstream: ScriptedUpstream
) -> None:
    """(b) the old design's job waiting for its user's lock: here, a second drain job of a user
    already claimed, which can only exit without writing."""
    user = new_user()
    upstream.json_delay_s = 1.0
    chat_as(mnemo.url + "/v1", user, f"My horse is {SECRET}")
    wait_until(lambda: upstream.json_in_flight > 0, timeout=10)
    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        queue = mnemo.settings.redis.queue_name
        claim = client.get(user_key(queue, "claim", user))
        assert claim is not None and claim.startswith(b"r:")
        stale = "mnemo:drain:stale-" + uuid.uuid4().hex[:6]
        now_ms = int(time.time() * 1000)  # arq skips a job scored 0
        record = {"t": None, "f": "drain_user", "a": [user], "k": {}, "et": now_ms}
        client.set("arq:job:" + stale, json.dumps(record))
        client.zadd(queue, {stale: now_ms})
    finally:
        client.close()
    erase(mnemo, user)
    upstream.json_delay_s = 0.0
    assert_no_trace(mnemo, redis_server, user, None)


def test_erased_while_its_exchange_waits_to_be_retried(
    mnemo: MnemoThread, redis_server: RedisServer, upstream: ScriptedUpstream
) -> None:
    """(e) scheduled for retry: the extraction LLM answered 503, the user's drain is deferred."""
    user = new_user()
    answers = iter([RuntimeError("the extraction LLM is down")])

    def extract_failing_once(text: str) -> list[str]:
        if (failure := next(answers, None)) is not None:
            raise failure  # the scripted upstream answers 500: a transient failure
        return clause_facts(text)

    upstream.extract = extract_failing_once
    chat_as(mnemo.url + "/v1", user, f"My violin is named {SECRET}")
    wait_until(lambda: upstream.of_task("extract"), timeout=10)
    queue = mnemo.settings.redis.queue_name
    client = redis_sync.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: client.exists(user_key(queue, "failures", user)))  # counted, drain deferred
    finally:
        client.close()
    erase(mnemo, user)
    settled(mnemo, redis_server)  # the deferred drain is gone with the erasure, or ran and found nothing to do
    chat_as(mnemo.url + "/v1", user, AFTER)
    assert_no_trace(mnemo, redis_server, user, AFTER)
    assert len(upstream.of_task("extract")) == 2  # the failed try and the new exchange's: no retry


def test_erased_while_its_exchange_is_in_the_outbox(
    make_settings: Callable[..., Settings], redis_server: RedisServer, upstream: ScriptedUpstream
) -> None:
    """(d) in the outbox: Redis was down when the chat ended. An erasure while Redis is down
    erases nothing (503); once it is back, the erasure drops the kept exchange (a copy delivered
    late from another replica's outbox is refused by the enqueue itself: test_user_order)."""
    settings = make_settings(extraction="llm", redis={"url": redis_server.url, "enqueue_timeout_s": 0.3})
    mnemo = MnemoThread(settings).start()
    user = new_user()
    try:
        redis_server.kill()
        chat_as(mnemo.url + "/v1", user, f"My parrot is {SECRET}")
        assert httpx.delete(f"{mnemo.url}/v1/users/{user}", timeout=30).status_code == 503
        redis_server.start()
        erase(mnemo, user)
        assert_no_trace(mnemo, redis_server, user, None)
    finally:
        mnemo.stop()
