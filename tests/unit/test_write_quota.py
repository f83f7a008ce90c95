"""The per-user write quota (mnemo.write_quota) against real Redis (db 15): what a take grants,
all or part, per one-minute window, and a retried take of one request granted the same again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
import redis.asyncio as redis_async

from mnemo.write_quota import QUOTA_TTL_S, WriteQuota, forget_user, quota_key, seconds_left
from tests.conftest import REDIS_URL

MINUTE = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[redis_async.Redis]:
    connection = redis_async.Redis.from_url(REDIS_URL)
    yield connection
    await connection.aclose()


def new_user() -> str:
    return f"quota-{uuid.uuid4().hex[:12]}"


async def test_takes_are_granted_up_to_the_limit_of_the_window_then_only_what_is_left(
    client: redis_async.Redis,
) -> None:
    quota, user = WriteQuota(client, 5), new_user()

    assert await quota.take(user, 3, MINUTE) == 3
    assert await quota.left(user, MINUTE + timedelta(seconds=30)) == 2
    assert await quota.take(user, 4, MINUTE + timedelta(seconds=59)) == 2  # partial: what is left
    assert await quota.take(user, 1, MINUTE + timedelta(seconds=10)) == 0
    # The next minute is a window of its own; other users never share a window.
    assert await quota.take(user, 5, MINUTE + timedelta(seconds=60)) == 5
    assert await quota.take(new_user(), 5, MINUTE) == 5


async def test_an_all_or_nothing_take_that_does_not_fit_takes_nothing(client: redis_async.Redis) -> None:
    quota, user = WriteQuota(client, 5), new_user()
    await quota.take(user, 4, MINUTE)

    assert await quota.take(user, 2, MINUTE, partial=False) == 0
    assert await quota.left(user, MINUTE) == 1  # the refused take counted nothing
    assert await quota.take(user, 1, MINUTE, partial=False) == 1


async def test_a_take_repeated_for_one_request_is_granted_what_it_was_and_counts_once(
    client: redis_async.Redis,
) -> None:
    quota, user = WriteQuota(client, 5), new_user()

    assert await quota.take(user, 4, MINUTE, request_id="req-a") == 4
    assert await quota.take(user, 4, MINUTE, request_id="req-a") == 4  # a retried job
    assert await quota.left(user, MINUTE) == 1
    assert await quota.take(user, 3, MINUTE, request_id="req-b") == 1
    assert await quota.take(user, 3, MINUTE, request_id="req-b") == 1  # not more on a retry
    assert await quota.take(user, 1, MINUTE, request_id="req-c") == 0


async def test_a_window_expires_names_no_user_id_and_is_gone_once_the_user_is_forgotten(
    client: redis_async.Redis,
) -> None:
    user, other = new_user(), new_user()
    for who in (user, other):
        await WriteQuota(client, 5).take(who, 1, MINUTE, request_id="req-x")
    await WriteQuota(client, 5).take(user, 1, MINUTE + timedelta(minutes=1))
    key = quota_key(user, MINUTE)
    assert 0 < await client.ttl(key) <= QUOTA_TTL_S
    assert user not in key and all(user.encode() not in field for field in await client.hkeys(key))

    assert await forget_user(client, user) == 2
    assert await WriteQuota(client, 5).left(user, MINUTE) == 5
    assert await WriteQuota(client, 5).left(other, MINUTE) == 4


async def test_no_limit_reads_nothing() -> None:
    user = new_user()

    unlimited = WriteQuota(None, 0)  # would fail on any Redis call
    assert await unlimited.take(user, 10_000, MINUTE) == 10_000
    assert await unlimited.left(user, MINUTE) is None


def test_retry_after_is_the_rest_of_the_window() -> None:
    assert seconds_left(MINUTE) == 60
    assert seconds_left(MINUTE + timedelta(seconds=45)) == 15
    assert seconds_left(MINUTE + timedelta(seconds=59, milliseconds=900)) == 1
