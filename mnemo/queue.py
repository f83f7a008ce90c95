"""The queue contract between gateway and worker: job name, payload schema, job ids.

The gateway enqueues by :data:`JOB_NAME`; it never imports worker code. Payloads are JSON
with a ``schema_version``, never pickles of our classes, and arq's job records are JSON too
(:func:`dump_job_record`), so one Lua script can write a job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
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
# The queue score of the user's latest job: the next one's is strictly higher, so a user's jobs
# never tie (arq would order tied jobs by id, not by number).
SEQUENCE_SCORE_KEY = "mnemo:seq-score:{user_id}"
# Enqueue in one round trip, atomically: skip a job id already queued or finished (arq's rule),
# number the exchange, note which job carries the number, and write and queue the arq job with
# the number as its `sequence` argument. The score (ms, to the microsecond) comes from Redis's
# clock and is strictly above the user's previous one, so a user's jobs sit in the queue in
# number order, untied, whichever gateway replica enqueued them. A seventh key is a side note
# (SideNote) written first, also for an exchange already queued: the same note again.
ENQUEUE_SCRIPT = """
if #KEYS == 7 then
  redis.call('HSET', KEYS[7], unpack(ARGV, 7))
  redis.call('EXPIRE', KEYS[7], ARGV[6])
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = redis.call('TIME')
local score = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local last = tonumber(redis.call('GET', KEYS[6]) or '0')
if score <= last then score = last + 0.001 end
local at = string.format('%.3f', score)
redis.call('SET', KEYS[6], at, 'EX', ARGV[2])
local n = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[5], n, ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[2])
local record = ARGV[4] .. n .. ARGV[5] .. string.format('%d', math.floor(score)) .. '}'
redis.call('PSETEX', KEYS[1], ARGV[3], record)
redis.call('ZADD', KEYS[3], at, ARGV[1])
return n
"""


@dataclass(frozen=True)
class SideNote:
    """A small hash with an expiry that travels with an exchange's enqueue, in its script: the
    gateway's note of what a chat was given costs no round trip of its own when memory is on."""

    key: str
    fields: Mapping[str, str]
    ttl_s: int


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


def dump_job_record(data: dict[str, Any]) -> bytes:
    """arq's job and result records as JSON (arq's default is pickle): readable with redis-cli,
    and writable by ENQUEUE_SCRIPT. Values JSON cannot hold (an exception as a failed job's
    result) are stored as their text."""
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def load_job_record(raw: bytes) -> Any:
    # Jobs and results written before records were JSON are arq's pickles (protocol 2+ starts
    # with 0x80, never "{"); they are read as before, so an upgrade loses no queued exchange.
    return json.loads(raw) if raw[:1] == b"{" else pickle.loads(raw)


def job_record_parts(payload: str) -> tuple[str, str]:
    """The JSON arq job record around its two values only Redis knows at enqueue time: the
    sequence number, then the enqueue time (ms), as ENQUEUE_SCRIPT joins them."""
    head = json.dumps({"t": None, "f": JOB_NAME, "a": [payload]}, separators=(",", ":"))[:-1]
    return head + ',"k":{"sequence":', '},"et":'


def decode_job(payload: str | dict[str, Any], sequence: int | None) -> Exchange:
    """The exchange a job carries, with the number the enqueue script gave it (jobs queued by
    earlier versions carry it inside the payload and no ``sequence`` argument)."""
    exchange = decode_exchange(payload)
    return exchange if sequence is None else exchange.model_copy(update={"sequence": sequence})


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

    @classmethod
    async def connect(cls, redis: RedisSettings, queue_name: str) -> ExchangeQueue:
        queue = cls(redis, queue_name)
        await queue.pool()
        return queue

    async def pool(self) -> ArqRedis:
        if self._pool is None:
            try:
                self._pool = await create_pool(
                    self._settings,
                    default_queue_name=self._queue_name,
                    job_serializer=dump_job_record,
                    job_deserializer=load_job_record,
                )
            except Exception as exc:  # redis raises OSError, ConnectionError, TimeoutError...
                raise QueueError(f"cannot connect to redis: {exc}") from exc
        return self._pool

    async def enqueue(self, exchange: Exchange, note: SideNote | None = None) -> str:
        """Enqueue and return the job id; a duplicate of an already queued exchange is a no-op
        (but for its ``note``, written either way)."""
        job_id = exchange_job_id(exchange.request_id)
        user_id = exchange.scope.user_id
        keys = [
            job_key_prefix + job_id,
            result_key_prefix + job_id,
            self._queue_name,
            SEQUENCE_KEY.format(user_id=user_id),
            SEQUENCE_JOBS_KEY.format(user_id=user_id),
            SEQUENCE_SCORE_KEY.format(user_id=user_id),
        ]
        head, middle = job_record_parts(encode_exchange(exchange))
        args = [job_id, str(SEQUENCE_JOBS_TTL_S), str(expires_extra_ms), head, middle]
        if note is not None and note.fields:
            keys.append(note.key)
            args += [str(note.ttl_s), *(part for pair in note.fields.items() for part in pair)]
        pool = await self.pool()
        try:
            # A hung Redis must not hold a finished response open.
            async with asyncio.timeout(self._timeout_s):
                script = pool.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args)
                await cast(Awaitable[Any], script)  # redis-py types eval sync-or-async
        except Exception as exc:
            raise QueueError(f"enqueue failed: {exc}") from exc
        return job_id

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
