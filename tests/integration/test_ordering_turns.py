"""Taking turns within one user's exchanges, against the real Redis: the gateway queues a
user's exchanges in number order, a job applied in this process wakes its successor at once,
and the bound on waiting only lets a job skip ahead when the user's exchanges stopped moving (a
lost number), never because the backlog is long."""

from __future__ import annotations

import asyncio
import pickle
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis_async
from arq import Retry
from arq.connections import RedisSettings
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job_raw

from mnemo.models import Scope, utcnow
from mnemo.queue import (
    APPLIED_AT_KEY,
    JOB_NAME,
    SEQUENCE_JOBS_KEY,
    SEQUENCE_KEY,
    SEQUENCE_SCORE_KEY,
    Exchange,
    ExchangeQueue,
    SideNote,
    decode_job,
    dump_job_record,
    load_job_record,
)
from tests.conftest import REDIS_URL
from workers import ordering
from workers.ordering import (
    Ledger,
    QueuePlace,
    TurnSignals,
    applied_sequence,
    mark_applied,
    take_turn,
    turn_has_come,
    wait_for_turn,
)


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = redis_async.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def exchange(user: str, sequence: int) -> Exchange:
    now = utcnow()
    return Exchange(
        request_id=f"req-{uuid.uuid4().hex}",
        scope=Scope(user_id=user),
        model="m",
        messages=[],
        reply="ok",
        started_at=now,
        completed_at=now,
        sequence=sequence,
    )


def fresh_user() -> str:
    return f"turns-{uuid.uuid4().hex[:8]}"


async def test_a_job_applied_in_this_process_wakes_its_successor_without_polling(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ordering, "POLL_S", 60.0)  # polling alone would not see the turn in time
    user, signals = fresh_user(), TurnSignals()
    second = asyncio.create_task(wait_for_turn(redis, exchange(user, 2), wait_s=120, signals=signals))
    await asyncio.sleep(0.1)
    assert not second.done()

    await mark_applied(redis, exchange(user, 1), signals)

    assert await asyncio.wait_for(second, timeout=5) is True
    assert len(signals) == 0  # nothing kept for a user with no waiting job


class CountingRedis:
    """The real client, counting the commands a waiting job sends."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self._client, name)


async def test_a_job_whose_predecessor_is_held_here_waits_without_polling_redis_and_only_its_turn_wakes_it(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ordering, "POLL_S", 0.01)  # would poll ~30 times in the wait below
    user, signals, counting = fresh_user(), TurnSignals(), CountingRedis(redis)
    place = QueuePlace(f"turns:{uuid.uuid4().hex[:8]}", "mnemo:exchange:third")
    with signals.holding(user, 1), signals.holding(user, 2):  # #1 applying here, #2 waiting here
        third = asyncio.create_task(
            wait_for_turn(counting, exchange(user, 3), wait_s=120, signals=signals, place=place)
        )
        await asyncio.sleep(0.3)
        assert counting.calls == ["get"]  # one look at the applied number, then no polling at all

        await mark_applied(redis, exchange(user, 1), signals)
        await asyncio.sleep(0.1)
        assert not third.done()  # #1 applied: that is #2's turn, not #3's

        await mark_applied(redis, exchange(user, 2), signals)
        assert await asyncio.wait_for(third, timeout=5) is True
    assert counting.calls == ["get"]  # woken by its turn, not by a read
    assert len(signals) == 0


async def test_a_turn_seen_by_polling_leaves_no_wake_up_behind(redis: Any) -> None:
    user, signals = fresh_user(), TurnSignals()
    await mark_applied(redis, exchange(user, 1))  # applied by another worker: no signal here

    assert await wait_for_turn(redis, exchange(user, 2), wait_s=5, signals=signals) is True
    assert await wait_for_turn(redis, exchange(user, 5), wait_s=0.1, signals=signals) is False
    assert len(signals) == 0


async def test_a_long_backlog_that_still_moves_never_breaks_the_order(redis: Any) -> None:
    user = fresh_user()
    await mark_applied(redis, exchange(user, 1))  # the user's exchanges moved just now

    with pytest.raises(Retry):  # #3 has waited past the bound, but #2 may still be coming
        await take_turn(redis, exchange(user, 3), waited_s=31.0, wait_s=30.0)

    assert await applied_sequence(redis, user) == 1


async def test_a_lost_number_is_skipped_once_the_user_made_no_progress_for_the_bound(redis: Any) -> None:
    user = fresh_user()
    await mark_applied(redis, exchange(user, 1))
    await redis.set(APPLIED_AT_KEY.format(user_id=user), time.time() - 31.0)  # #2 never came

    await take_turn(redis, exchange(user, 3), waited_s=31.0, wait_s=30.0)  # goes ahead, no Retry


async def test_a_job_that_has_not_waited_the_bound_yet_gives_its_slot_back(redis: Any) -> None:
    user = fresh_user()

    with pytest.raises(Retry):
        await take_turn(redis, exchange(user, 2), waited_s=1.0, wait_s=30.0)


async def test_a_replayed_old_job_moves_neither_the_number_nor_its_time(redis: Any) -> None:
    user = fresh_user()
    await mark_applied(redis, exchange(user, 5))
    moved_at = await redis.get(APPLIED_AT_KEY.format(user_id=user))

    await mark_applied(redis, exchange(user, 3))

    assert await applied_sequence(redis, user) == 5
    assert await redis.get(APPLIED_AT_KEY.format(user_id=user)) == moved_at


async def test_the_ledger_is_written_with_the_number_it_advances_even_for_an_unnumbered_job(redis: Any) -> None:
    user = fresh_user()
    numbered, unnumbered = f"mnemo:applied:{uuid.uuid4().hex}", f"mnemo:applied:{uuid.uuid4().hex}"

    await mark_applied(redis, exchange(user, 1), ledger=Ledger(numbered, 600))
    await mark_applied(redis, exchange(user, 1).model_copy(update={"sequence": None}), ledger=Ledger(unnumbered, 600))

    assert await applied_sequence(redis, user) == 1
    for key in (numbered, unnumbered):
        assert await redis.get(key) == b"1"
        assert 0 < await redis.ttl(key) <= 600
    await redis.delete(numbered, unnumbered)


def test_a_turn_has_come_once_the_predecessor_is_applied_or_when_the_job_has_no_number() -> None:
    assert turn_has_come(exchange("u", 1), 0)
    assert turn_has_come(exchange("u", 3), 2) and turn_has_come(exchange("u", 3), 7)
    assert not turn_has_come(exchange("u", 3), 1)
    assert turn_has_come(exchange("u", 3).model_copy(update={"sequence": None}), 0)


async def test_one_users_exchanges_from_two_gateways_queue_in_number_order_and_each_number_names_its_job(
    redis: Any,
) -> None:
    user, queue_name = fresh_user(), f"turns:{uuid.uuid4().hex[:8]}"
    gateways = [await ExchangeQueue.connect(RedisSettings.from_dsn(REDIS_URL), queue_name) for _ in range(2)]
    jitter = random.Random(7)

    async def after_network_jitter(queue: ExchangeQueue) -> str:
        await asyncio.sleep(jitter.uniform(0, 0.005))
        return await queue.enqueue(exchange(user, 0))

    try:
        job_ids = await asyncio.gather(*(after_network_jitter(gateways[n % 2]) for n in range(30)))
        scores = {job_id.decode(): score for job_id, score in await redis.zrange(queue_name, 0, -1, withscores=True)}
        numbers = {
            int(number): job_id.decode()
            for number, job_id in (await redis.hgetall(SEQUENCE_JOBS_KEY.format(user_id=user))).items()
        }
        records = {job_id: await redis.get(job_key_prefix + job_id) for job_id in job_ids}
    finally:
        await redis.delete(queue_name, *(job_key_prefix + job_id for job_id in job_ids))
        await redis.delete(SEQUENCE_SCORE_KEY.format(user_id=user))
        for queue in gateways:
            await queue.close()

    assert sorted(scores) == sorted(job_ids) == sorted(numbers.values())
    in_number_order = [scores[numbers[number]] for number in sorted(numbers)]
    assert in_number_order == sorted(set(in_number_order))  # arq reads its queue by score: no ties
    for number, job_id in numbers.items():  # each job carries its number, and arq can read it
        function, args, kwargs, _, enqueued_ms = deserialize_job_raw(records[job_id], deserializer=load_job_record)
        assert (function, kwargs, enqueued_ms) == (JOB_NAME, {"sequence": number}, int(scores[job_id]))
        assert decode_job(args[0], kwargs["sequence"]).sequence == number


async def test_enqueueing_the_same_exchange_twice_queues_and_numbers_it_once(redis: Any) -> None:
    user, queue_name = fresh_user(), f"turns:{uuid.uuid4().hex[:8]}"
    queue = await ExchangeQueue.connect(RedisSettings.from_dsn(REDIS_URL), queue_name)
    once = exchange(user, 0)
    try:
        job_ids = {await queue.enqueue(once), await queue.enqueue(once)}
        queued = await redis.zcard(queue_name)
        numbered = await redis.get(SEQUENCE_KEY.format(user_id=user))
    finally:
        await redis.delete(queue_name, *(job_key_prefix + job_id for job_id in job_ids))
        await queue.close()
    assert (len(job_ids), queued, numbered) == (1, 1, b"1")


async def test_an_enqueue_writes_its_side_note_in_the_same_script_also_for_a_duplicate(redis: Any) -> None:
    user, queue_name = fresh_user(), f"turns:{uuid.uuid4().hex[:8]}"
    queue = await ExchangeQueue.connect(RedisSettings.from_dsn(REDIS_URL), queue_name)
    once = exchange(user, 0)
    note_key = f"note:{uuid.uuid4().hex}"
    try:
        job_id = await queue.enqueue(once, SideNote(note_key, {"user_id": user, "injected": "m1,m2"}, 60))
        first = (await redis.hgetall(note_key), await redis.ttl(note_key))
        await redis.delete(note_key)
        await queue.enqueue(once, SideNote(note_key, {"user_id": user, "injected": "m1,m2"}, 60))
        again = await redis.hgetall(note_key)
        numbered = await redis.get(SEQUENCE_KEY.format(user_id=user))
    finally:
        await redis.delete(queue_name, job_key_prefix + job_id, note_key)
        await queue.close()
    assert first[0] == again == {b"user_id": user.encode(), b"injected": b"m1,m2"} and 0 < first[1] <= 60
    assert numbered == b"1"  # the duplicate wrote its note and nothing else


def test_a_job_record_pickled_by_an_earlier_version_is_still_read() -> None:
    record = pickle.dumps({"t": 1, "f": JOB_NAME, "a": ("payload",), "k": {}, "et": 1})
    assert load_job_record(record)["a"] == ("payload",)
    assert load_job_record(dump_job_record({"r": ValueError("boom")})) == {"r": "boom"}
