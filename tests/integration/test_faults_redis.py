"""Redis outage: a private redis-server is SIGKILLed while chats keep coming. Chats still
succeed, exchanges wait in the durable outbox in the data directory, and once Redis is back
(also after a gateway restart in between) every exchange is processed exactly once."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from arq.constants import in_progress_key_prefix
from redis.asyncio.client import Pipeline

from mnemo.config import Settings
from mnemo.outbox import Outbox, OutboxItem
from tests.conftest import wait_until
from tests.support.ledger import Tally, thread_tally
from tests.support.probes import LITELLM_READONLY_WARNING, SEEN_BY_WORKERS, chat_as, drain, metric
from tests.support.redis_server import RedisServer
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

USER = "outage-user"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def outage_settings(make_settings: Callable[..., Settings], redis: RedisServer) -> Settings:
    return make_settings(
        extraction="raw",
        redis={"url": redis.url, "enqueue_timeout_s": 0.5},
        worker={"job_timeout_s": 5},
    )


def send(mnemo: MnemoThread, sent: dict[str, str], text: str) -> None:
    """One chat; it must succeed whatever Redis is doing. Records its request id."""
    response = httpx.post(
        mnemo.url + "/v1/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]},
        headers={"X-Mnemo-User-Id": USER, "Authorization": "Bearer sk-client"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Echo: {text}"
    sent[response.headers["x-mnemo-request-id"]] = USER


def wait_for_exact(mnemo: MnemoThread, sent: dict[str, str], timeout: float = 60) -> Tally:
    # A job cut off by the kill runs again only once its in-progress key lapses (job timeout + 10 s,
    # kept by the append-only file), behind the worker's reconnect backoff: ~15-25 s on a quiet
    # machine, so 30 s was too tight on a loaded one.
    wait_until(lambda: thread_tally(mnemo, sent).stored == len(sent), timeout=timeout, interval=0.2)
    drain(mnemo)
    return thread_tally(mnemo, sent)


def test_chats_survive_a_redis_sigkill_and_every_exchange_is_processed_once_it_is_back(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream, redis_server: RedisServer
) -> None:
    mnemo = MnemoThread(outage_settings(make_settings, redis_server)).start()
    sent: dict[str, str] = {}
    try:
        for i in range(5):
            send(mnemo, sent, f"I collect stamp number {i}")
        redis_server.kill()
        for i in range(5, 15):
            send(mnemo, sent, f"I collect stamp number {i}")
        assert metric(mnemo, "mnemo_outbox_writes_total") >= 10
        assert httpx.get(mnemo.url + "/readyz").json()["checks"]["queue"].startswith("unavailable")
        redis_server.start()
        result = wait_for_exact(mnemo, sent)
        assert metric(mnemo, "mnemo_enqueue_failures_total", reason="outbox_full") == 0
    finally:
        mnemo.stop()
    assert result == Tally(sent=15, stored=15, duplicated=0, lost=0)


@LITELLM_READONLY_WARNING
def test_a_redis_sigkill_mid_job_drains_every_users_backlog_in_order_within_seconds_of_its_return(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream, redis_server: RedisServer
) -> None:
    """Redis dies while drains are mid-extraction (their claims and arq's in-progress keys are in
    its append-only file). Nothing waits for those keys (300 s with the default job timeout):
    the claims' leases lapse, the sweep reschedules, and the backlog drains in seconds."""
    settings = make_settings(extraction="llm", redis={"url": redis_server.url, "enqueue_timeout_s": 0.5})
    mnemo = MnemoThread(settings).start()
    users = [f"sigkill-{n}" for n in range(3)]
    sent: dict[str, str] = {}
    upstream.json_delay_s = 0.5
    try:
        for n in range(4):
            for user in users:
                sent[chat_as(mnemo.url + "/v1", user, f"I keep bee hive number {n}")] = user
        wait_until(lambda: upstream.json_in_flight > 0, timeout=10)
        redis_server.kill()
        time.sleep(1.5)  # the drains' LLM answers come back to a dead Redis: their next steps fail
        upstream.json_delay_s = 0.0
        redis_server.start()
        back = time.monotonic()
        wait_until(lambda: thread_tally(mnemo, sent).stored == len(sent), timeout=60, interval=0.2)
        drained_after_s = time.monotonic() - back
        drain(mnemo)
        result = thread_tally(mnemo, sent)
    finally:
        mnemo.stop()
    assert result == Tally(sent=12, stored=12, duplicated=0, lost=0)
    assert drained_after_s < 30, f"the backlog took {drained_after_s:.1f}s after redis came back"
    taken = list(dict.fromkeys(request_id for request_id in SEEN_BY_WORKERS if request_id in sent))
    for user in users:
        assert [r for r in taken if sent[r] == user] == [r for r in sent if sent[r] == user]


def test_a_connection_lost_while_claiming_a_job_costs_neither_the_worker_nor_a_job_slot(
    make_settings: Callable[..., Settings],
    upstream: ScriptedUpstream,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis cuts the worker's connection between arq's WATCH of a job's in-progress key and
    its EXEC; redis-py reports that as a WatchError. The worker must poll on, and give back the
    job slot arq took for the claim: with one slot, a slot kept would stop the worker for good."""
    killer = redis_sync.Redis.from_url(redis_server.url)
    cuts_left = [3]
    watch = Pipeline.watch

    async def watch_then_lose_the_connection(pipe: Pipeline, *names: str | bytes) -> object:
        answer = await watch(pipe, *names)
        key = names[0].decode() if isinstance(names[0], bytes) else names[0]
        if cuts_left[0] and key.startswith(in_progress_key_prefix):
            cuts_left[0] -= 1
            killer.client_kill_filter(_id=await pipe.client_id())
        return answer

    monkeypatch.setattr(Pipeline, "watch", watch_then_lose_the_connection)
    settings = make_settings(extraction="raw", redis={"url": redis_server.url}, worker={"max_jobs": 1})
    mnemo = MnemoThread(settings).start()
    sent: dict[str, str] = {}
    try:
        for i in range(4):
            send(mnemo, sent, f"I planted tree number {i}")
        result = wait_for_exact(mnemo, sent, timeout=30)
        assert mnemo.worker is not None and mnemo.worker.main_task is not None
        assert not mnemo.worker.main_task.done()
        assert mnemo.worker.job_counter == 0
    finally:
        mnemo.stop()
        killer.close()
    assert cuts_left == [0]  # every cut really happened
    assert result == Tally(sent=4, stored=4, duplicated=0, lost=0)


def test_an_outbox_read_that_fails_does_not_stop_its_delivery(
    make_settings: Callable[..., Settings],
    upstream: ScriptedUpstream,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outbox's first read fails (a disk error) while Redis is down. Once Redis is back,
    every exchange kept in the outbox must still be delivered: the flusher outlives the error."""
    failures_left = [1]
    oldest = Outbox.oldest

    def oldest_failing_once(outbox: Outbox, limit: int = 100) -> list[OutboxItem]:
        if failures_left[0]:
            failures_left[0] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return oldest(outbox, limit)

    monkeypatch.setattr(Outbox, "oldest", oldest_failing_once)
    mnemo = MnemoThread(outage_settings(make_settings, redis_server)).start()
    sent: dict[str, str] = {}
    try:
        redis_server.kill()
        for i in range(3):
            send(mnemo, sent, f"I read book number {i}")
        wait_until(lambda: failures_left == [0])
        redis_server.start()
        result = wait_for_exact(mnemo, sent, timeout=30)
    finally:
        mnemo.stop()
    assert result == Tally(sent=3, stored=3, duplicated=0, lost=0)


def test_a_chat_is_still_answered_when_redis_is_down_and_the_outbox_cannot_be_written(
    make_settings: Callable[..., Settings],
    upstream: ScriptedUpstream,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(outbox: Outbox, job_id: str, user_id: str, payload: str) -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Outbox, "put", disk_full)
    mnemo = MnemoThread(outage_settings(make_settings, redis_server)).start()
    try:
        redis_server.kill()
        send(mnemo, {}, "I collect blue stamps")  # asserts a 200 with the upstream's reply
        assert metric(mnemo, "mnemo_enqueue_failures_total", reason="outbox_unavailable") == 1
    finally:
        mnemo.stop()


def test_the_outbox_outlives_a_gateway_restart_while_redis_is_down(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream, redis_server: RedisServer
) -> None:
    settings = outage_settings(make_settings, redis_server)
    sent: dict[str, str] = {}
    first = MnemoThread(settings).start()
    try:
        send(first, sent, "I own a red kayak")
        wait_until(lambda: thread_tally(first, sent).stored == 1)
        redis_server.kill()
        for i in range(8):
            send(first, sent, f"I visited lighthouse number {i}")
        assert metric(first, "mnemo_outbox_writes_total") == 8
    finally:
        first.stop()  # Redis is still down: the 8 exchanges are only in data_dir/outbox.sqlite3

    second = MnemoThread(settings).start()
    try:
        assert httpx.get(second.url + "/readyz").status_code == 503
        send(second, sent, "I visited lighthouse number 8")  # queues behind the older ones
        redis_server.start()
        result = wait_for_exact(second, sent)
    finally:
        second.stop()
    assert result == Tally(sent=10, stored=10, duplicated=0, lost=0)
    # The outbox delivered in the order the exchanges completed, and the worker took them so.
    assert [request_id for request_id in SEEN_BY_WORKERS if request_id in sent] == list(sent)
