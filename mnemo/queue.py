"""The queue contract between gateway and worker: job name, payload schema, job ids.

The gateway enqueues by :data:`JOB_NAME`; it never imports worker code. Payloads are JSON
with a ``schema_version``, never pickles of our classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Any, Literal, cast

from arq.connections import ArqRedis, RedisSettings, create_pool
from pydantic import BaseModel, Field

from mnemo.config import Settings
from mnemo.errors import QueueError
from mnemo.models import Scope

logger = logging.getLogger(__name__)

JOB_NAME = "process_exchange"
SCHEMA_VERSION = 1
# Per-user order: the gateway numbers each user's exchanges as Redis accepts them; the worker
# applies number N only after N-1 (see workers/ordering.py).
SEQUENCE_KEY = "mnemo:seq:{user_id}"
APPLIED_SEQUENCE_KEY = "mnemo:applied-seq:{user_id}"
APPLIED_AT_KEY = "mnemo:applied-at:{user_id}"  # when applied-seq last moved (unix seconds)
# Which job carries each of a user's numbers not yet applied, so a job waiting for number N-1
# can tell whether that job is coming (workers.ordering.predecessor_coming).
SEQUENCE_JOBS_KEY = "mnemo:seq-jobs:{user_id}"
SEQUENCE_JOBS_TTL_S = 7 * 24 * 3600
# Number the exchange and note its job in one round trip.
NUMBER_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], n, ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"""


class ExchangeMessage(BaseModel):
    """A client message reduced to what memory uses: its role and its text parts."""

    role: str
    content: str
    name: str | None = None


class Exchange(BaseModel):
    """One completed request/reply pair, as recorded by the gateway."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    scope: Scope
    model: str
    messages: list[ExchangeMessage]
    reply: str
    started_at: datetime
    completed_at: datetime
    extraction_mode: Literal["raw", "llm"] | None = Field(default=None, description="Per-request override.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Copied onto every memory it creates.")
    sequence: int | None = Field(default=None, description="The user's exchange number, set when enqueued.")


def exchange_job_id(request_id: str) -> str:
    return f"mnemo:exchange:{request_id}"


def encode_exchange(exchange: Exchange) -> str:
    return exchange.model_dump_json()


def decode_exchange(payload: str | dict[str, Any]) -> Exchange:
    data = json.loads(payload) if isinstance(payload, str) else payload
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise QueueError(f"unsupported exchange schema_version {version!r} (this build reads {SCHEMA_VERSION})")
    return Exchange.model_validate(data)


def redis_settings(settings: Settings, unix_socket_path: str | None = None) -> RedisSettings:
    """arq's connection settings: the configured URL, or the embedded server's socket."""
    if settings.redis.url:
        redis = RedisSettings.from_dsn(settings.redis.url)
    else:
        if unix_socket_path is None:
            raise QueueError("no redis.url configured and no embedded redis running")
        redis = RedisSettings(unix_socket_path=unix_socket_path)
    redis.conn_timeout = max(1, int(settings.redis.enqueue_timeout_s))
    redis.conn_retries = 0
    return redis


class ExchangeQueue:
    """The gateway's side of the queue: enqueue completed exchanges, idempotently.

    The connection is (re)made on demand, so a gateway started while Redis is down starts
    recording as soon as Redis is back, and /readyz reports the queue until then.
    """

    def __init__(self, redis: RedisSettings, queue_name: str, timeout_s: float = 2.0) -> None:
        self._settings = redis
        self._queue_name = queue_name
        self._timeout_s = timeout_s
        self._pool: ArqRedis | None = None
        # Numbering and enqueueing of one user's exchanges happen one at a time, so the queue
        # holds them in number order (see workers.ordering: a job whose predecessor sits behind
        # it in the queue must give its slot back, which shuffles the user's backlog).
        self._user_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, holders and waiters

    @classmethod
    async def connect(cls, redis: RedisSettings, queue_name: str) -> ExchangeQueue:
        queue = cls(redis, queue_name)
        await queue.pool()
        return queue

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            try:
                self._pool = await create_pool(self._settings, default_queue_name=self._queue_name)
            except Exception as exc:  # redis raises OSError, ConnectionError, TimeoutError...
                raise QueueError(f"cannot connect to redis: {exc}") from exc
        return self._pool

    async def enqueue(self, exchange: Exchange) -> str:
        """Enqueue and return the job id; a duplicate of an already queued exchange is a no-op."""
        job_id = exchange_job_id(exchange.request_id)
        pool = await self.pool()
        try:
            # A hung Redis must not hold a finished response open.
            async with asyncio.timeout(self._timeout_s), self._user_lock(exchange.scope.user_id):
                user_id = exchange.scope.user_id
                keys = (SEQUENCE_KEY.format(user_id=user_id), SEQUENCE_JOBS_KEY.format(user_id=user_id))
                numbering = pool.eval(NUMBER_SCRIPT, 2, *keys, job_id, str(SEQUENCE_JOBS_TTL_S))
                sequence = await cast(Awaitable[Any], numbering)  # redis-py types it sync-or-async
                numbered = exchange.model_copy(update={"sequence": int(sequence)})
                await pool.enqueue_job(
                    JOB_NAME, encode_exchange(numbered), _job_id=job_id, _queue_name=self._queue_name
                )
        except Exception as exc:
            raise QueueError(f"enqueue failed: {exc}") from exc
        return job_id

    @contextlib.asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        lock, users = self._user_locks.get(user_id) or (asyncio.Lock(), 0)
        self._user_locks[user_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._user_locks[user_id]
            if users == 1:
                del self._user_locks[user_id]  # nobody holds or awaits it: keep the dict to active users
            else:
                self._user_locks[user_id] = (lock, users - 1)

    async def ping(self) -> None:
        pool = await self.pool()
        try:
            await pool.ping()
        except Exception as exc:
            raise QueueError(f"redis unreachable: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
