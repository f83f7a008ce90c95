"""Per-user order's one mechanism (mnemo.user_order) against the real Redis: a list and a claim
per user, the drain job it schedules, the lease that lets a dead worker's user go in seconds,
and the erasure stamp every write checks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as redis_async
from arq.jobs import deserialize_job

from mnemo.config import Settings
from mnemo.models import Scope, utcnow
from mnemo.queue import Exchange, ExchangeMessage, SideNote, encode_exchange, enqueue_exchange, load_job_record
from mnemo.user_order import DRAIN_JOB, LEASE_MS, UserOrder, epoch_ms, user_key
from tests.conftest import REDIS_URL, wait_until
from tests.support.ledger import thread_tally
from tests.support.probes import chat_as
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = redis_async.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def order() -> UserOrder:
    queue = f"mnemo:order-test:{uuid.uuid4().hex[:8]}"
    return UserOrder(queue)


def exchange(user: str, text: str, *, started_ago_s: float = 0.0) -> Exchange:
    now = utcnow()
    return Exchange(
        request_id=f"req_{uuid.uuid4().hex}",
        scope=Scope(user_id=user),
        model="m",
        messages=[ExchangeMessage(role="user", content=text)],
        reply="ok",
        started_at=now - timedelta(seconds=started_ago_s),
        completed_at=now,
    )


async def queued_jobs(redis: Any, order: UserOrder) -> list[str]:
    return [job.decode() for job in await redis.zrange(order.queue_name, 0, -1)]


async def test_a_users_exchanges_queue_in_order_once_each_with_one_drain_scheduled(
    redis: Any, order: UserOrder
) -> None:
    first, second = exchange("ann", "one"), exchange("ann", "two")
    assert await enqueue_exchange(redis, order, first) == 1
    assert await enqueue_exchange(redis, order, second) == 1
    assert await enqueue_exchange(redis, order, first) == 0  # a redelivery: queued once
    assert await redis.lrange(user_key(order.prefix, "pending", "ann"), 0, -1) == [
        encode_exchange(first).encode(),
        encode_exchange(second).encode(),
    ]
    (job_id,) = await queued_jobs(redis, order)  # one drain for the user, however many exchanges
    assert await redis.get(user_key(order.prefix, "claim", "ann")) == b"s:" + job_id.encode()
    assert 0 < await redis.pttl(user_key(order.prefix, "claim", "ann"))


async def test_the_drain_job_record_written_by_the_script_is_read_by_arqs_own_reader(
    redis: Any, order: UserOrder
) -> None:
    user = 'zoë "quoted" \\ / user'
    await enqueue_exchange(redis, order, exchange(user, "hi"))
    (job_id,) = await queued_jobs(redis, order)
    job = deserialize_job(await redis.get("arq:job:" + job_id), deserializer=load_job_record)
    assert (job.function, job.args, job.kwargs, job.job_try) == (DRAIN_JOB, [user], {}, None)
    score = await redis.zscore(order.queue_name, job_id)
    assert abs(job.enqueue_time.timestamp() * 1000 - score) < 1
    assert abs(score - time.time() * 1000) < 5000


async def test_a_drain_applies_in_order_releases_when_empty_and_a_later_exchange_schedules_the_next(
    redis: Any, order: UserOrder
) -> None:
    first, second = exchange("bo", "one"), exchange("bo", "two")
    await enqueue_exchange(redis, order, first)
    await enqueue_exchange(redis, order, second)
    (job_id,) = await queued_jobs(redis, order)
    stale = await order.step(redis, "bo", "mnemo:drain:other", start=True)
    assert not stale.owned  # only the job the claim names may drain the user

    step = await order.step(redis, "bo", job_id, start=True)
    assert step.owned and step.head == encode_exchange(first)
    step = await order.step(redis, "bo", job_id, step.head or "")
    assert step.owned and step.head == encode_exchange(second)
    # While the drain runs, a new exchange joins the list and schedules nothing.
    third = exchange("bo", "three")
    await enqueue_exchange(redis, order, third)
    assert len(await queued_jobs(redis, order)) == 1
    step = await order.step(redis, "bo", job_id, step.head or "")
    assert step.head == encode_exchange(third)
    step = await order.step(redis, "bo", job_id, step.head or "")
    assert step.owned and step.head is None  # empty: released in the same script
    assert await order.drained(redis, "bo")
    await redis.zrem(order.queue_name, job_id)  # arq would remove the finished job

    await enqueue_exchange(redis, order, exchange("bo", "four"))  # no claim: a new drain
    assert len(await queued_jobs(redis, order)) == 1


async def test_a_dead_drains_lease_lapses_and_a_sweep_schedules_a_new_one_in_seconds(
    redis: Any, order: UserOrder
) -> None:
    await enqueue_exchange(redis, order, exchange("cy", "one"))
    (dead_job,) = await queued_jobs(redis, order)
    assert (await order.step(redis, "cy", dead_job, start=True)).owned
    assert await order.sweep(redis) == 0  # a live lease: nothing to do
    claim = user_key(order.prefix, "claim", "cy")
    assert 0 < await redis.pttl(claim) <= LEASE_MS
    await redis.pexpire(claim, 1)  # the worker died: nobody renews its lease
    await asyncio.sleep(0.01)
    await redis.zadd(order.prefix + ":claims", {"cy": 0})
    assert await order.sweep(redis) == 1
    jobs = await queued_jobs(redis, order)
    (new_job,) = [job for job in jobs if job != dead_job]
    assert not (await order.step(redis, "cy", dead_job, start=True)).owned  # arq's late re-run is stale
    assert (await order.step(redis, "cy", new_job, start=True)).head is not None


async def test_a_heartbeat_keeps_the_claim_and_a_lost_claim_stops_the_drain(redis: Any, order: UserOrder) -> None:
    await enqueue_exchange(redis, order, exchange("di", "one"))
    (job_id,) = await queued_jobs(redis, order)
    await order.step(redis, "di", job_id, start=True)
    assert await order.heartbeat(redis, "di", job_id)
    await redis.set(user_key(order.prefix, "claim", "di"), "r:mnemo:drain:someone-else")
    assert not await order.heartbeat(redis, "di", job_id)
    assert await order.fence(redis, "di", job_id, epoch_ms(time.time())) == 0
    assert not (await order.step(redis, "di", job_id, "x")).owned


async def test_an_erasure_refuses_earlier_exchanges_fences_their_writes_and_waits_for_one_being_written(
    redis: Any, order: UserOrder
) -> None:
    early = exchange("eve", "my secret", started_ago_s=5)
    await enqueue_exchange(redis, order, early)
    (job_id,) = await queued_jobs(redis, order)
    await order.step(redis, "eve", job_id, start=True)
    assert await order.fence(redis, "eve", job_id, epoch_ms(early.started_at.timestamp())) == 1  # writing now

    erasing = asyncio.create_task(order.erase(redis, "eve", wait_s=5))
    await asyncio.sleep(0.2)
    assert not erasing.done()  # waits for the write that began before it
    await order.step(redis, "eve", job_id, encode_exchange(early))  # the write ends: marker released
    assert await asyncio.wait_for(erasing, 2) is True

    assert await order.fence(redis, "eve", job_id, epoch_ms(early.started_at.timestamp())) in (0, -1)
    assert await redis.llen(user_key(order.prefix, "pending", "eve")) == 0
    # A copy of an earlier exchange delivered late (another replica's outbox) is refused, note and all.
    note = SideNote(f"mnemo:request:{uuid.uuid4().hex}", {"user_id": "eve", "injected": ""}, 60)
    assert await enqueue_exchange(redis, order, exchange("eve", "my secret", started_ago_s=5), note) == -1
    assert not await redis.exists(note.key)
    assert await order.add_failure(redis, "eve", early.request_id, epoch_ms(early.started_at.timestamp())) == -1
    assert await redis.llen(user_key(order.prefix, "pending", "eve")) == 0
    # A new exchange after the erasure is a new start.
    assert await enqueue_exchange(redis, order, exchange("eve", "hello again"), note) == 1
    assert await redis.exists(note.key)
    stamp = [key async for key in redis.scan_iter(match=order.prefix + ":erased:*")]
    assert len(stamp) == 1 and b"eve" not in stamp[0]  # the stamp names no user in clear


async def test_an_erasure_does_not_wait_for_a_writer_that_died(redis: Any, order: UserOrder) -> None:
    writing = user_key(order.prefix, "writing", "fay")
    await redis.set(writing, "mnemo:drain:dead", px=300)
    # The dead writer's marker lapses in 0.3 s: the erasure goes on then, not after its minute.
    assert await asyncio.wait_for(order.erase(redis, "fay", wait_s=60), 30)


async def test_a_hand_off_defers_the_user_to_a_new_job_keeping_the_head(redis: Any, order: UserOrder) -> None:
    first = exchange("gus", "one")
    await enqueue_exchange(redis, order, first)
    (job_id,) = await queued_jobs(redis, order)
    await order.step(redis, "gus", job_id, start=True)
    assert await order.hand_off(redis, "gus", job_id, delay_s=30)
    (_, later) = sorted(await queued_jobs(redis, order), key=lambda job: job != job_id)
    assert await redis.zscore(order.queue_name, later) > time.time() * 1000 + 25_000
    step = await order.step(redis, "gus", later, start=True)
    assert step.head == encode_exchange(first)
    assert not (await order.step(redis, "gus", job_id)).owned


def test_one_users_dead_claim_delays_neither_other_users_nor_itself_for_long(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream
) -> None:
    """A worker died holding a user's claim (a running lease, as it would have left it): that
    user's exchange waits only for the lease; another user's is applied at once."""
    settings = make_settings(extraction="raw")
    mnemo = MnemoThread(settings).start()
    queue = settings.redis.queue_name
    stuck, free = f"stuck-{uuid.uuid4().hex[:6]}", f"free-{uuid.uuid4().hex[:6]}"
    sent: dict[str, str] = {}

    async def plant_dead_claim(_: object) -> None:
        client = redis_async.Redis.from_url(REDIS_URL)
        await client.set(user_key(queue, "claim", stuck), "r:mnemo:drain:dead-worker", px=LEASE_MS)
        await client.zadd(queue + ":claims", {stuck: time.time() * 1000 + LEASE_MS})
        await client.aclose()

    async def dead_claim_held(_: object) -> bool:
        client = redis_async.Redis.from_url(REDIS_URL)
        try:
            return bool(await client.get(user_key(queue, "claim", stuck)) == b"r:mnemo:drain:dead-worker")
        finally:
            await client.aclose()

    try:
        mnemo.call(plant_dead_claim)
        for user in (stuck, free):
            sent[chat_as(mnemo.url + "/v1", user, f"I am {user}")] = user
        of_stuck = {k: v for k, v in sent.items() if v == stuck}
        wait_until(lambda: thread_tally(mnemo, {k: v for k, v in sent.items() if v == free}).stored == 1, 20)
        # Not behind the stuck user's lease: applied while the dead claim still holds that user.
        held_while_free_applied = mnemo.call(dead_claim_held)
        stuck_applied_early = thread_tally(mnemo, of_stuck).stored
        wait_until(lambda: thread_tally(mnemo, sent).stored == 2, 30)  # behind its lease only, then swept
    finally:
        mnemo.stop()
    assert held_while_free_applied and stuck_applied_early == 0


async def test_a_scheduled_drain_keeps_its_place_however_long_it_waits_and_a_lost_one_is_replaced(
    redis: Any, order: UserOrder
) -> None:
    await enqueue_exchange(redis, order, exchange("hal", "one"))
    (waiting,) = await queued_jobs(redis, order)
    await redis.zadd(order.prefix + ":claims", {"hal": 0})  # the check is due: the queue is deep
    assert await order.sweep(redis) == 0  # its job still waits: the user keeps its place
    assert await queued_jobs(redis, order) == [waiting]
    await redis.delete("arq:job:" + waiting)  # the job's record is gone (expired unstarted, deleted)
    await redis.zrem(order.queue_name, waiting)
    await redis.zadd(order.prefix + ":claims", {"hal": 0})
    assert await order.sweep(redis) == 1
    (replacement,) = await queued_jobs(redis, order)
    assert (await order.step(redis, "hal", replacement, start=True)).head is not None


def test_an_exchange_queued_by_an_earlier_version_is_moved_into_its_users_list_and_applied(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream, redis_client: Any
) -> None:
    """Jobs of the one-job-per-exchange design (``process_exchange``, arq's JSON record with a
    ``sequence``) left in the queue by an upgrade are applied, not lost."""
    settings = make_settings(extraction="raw")
    user = f"upgrader-{uuid.uuid4().hex[:6]}"
    old = exchange(user, "I kept a diary in 2019")
    now_ms = int(time.time() * 1000)  # arq skips a job scored 0 (it reads the score as "not queued")
    record = {"t": None, "f": "process_exchange", "a": [encode_exchange(old)], "k": {"sequence": 1}, "et": now_ms}
    job_id = f"mnemo:exchange:{old.request_id}"
    redis_client.set("arq:job:" + job_id, json.dumps(record))
    redis_client.zadd(settings.redis.queue_name, {job_id: now_ms})
    mnemo = MnemoThread(settings).start()
    try:
        wait_until(lambda: thread_tally(mnemo, {old.request_id: user}).stored == 1, 20)
    finally:
        mnemo.stop()


async def test_two_deployments_sharing_a_redis_database_never_share_a_drain_job(redis: Any) -> None:
    """arq's job keys are not kept apart by queue: the drain's job id names its queue."""
    first, second = (UserOrder(name) for name in (f"q1-{uuid.uuid4().hex}", f"q2-{uuid.uuid4().hex}"))
    await enqueue_exchange(redis, first, exchange("ivy", "one"))
    await enqueue_exchange(redis, second, exchange("ivy", "one"))
    (one,), (two,) = await queued_jobs(redis, first), await queued_jobs(redis, second)
    assert one != two
    assert first.prefix in one and second.prefix in two
