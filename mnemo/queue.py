"""The queue contract between gateway and worker: the exchange's payload schema and its enqueue.

The gateway appends each exchange to its user's pending list (mnemo.user_order); it never
imports worker code. Payloads are JSON with a ``schema_version``, never pickles of our classes,
and arq's job records are JSON too (:func:`dump_job_record`), so a Lua script can write a job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from arq.connections import ArqRedis, RedisSettings, create_pool
from pydantic import BaseModel, Field

from mnemo.config import Settings
from mnemo.errors import QueueError
from mnemo.models import Scope
from mnemo.user_order import UserOrder, epoch_ms

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# The enqueue is one script (mnemo.user_order.ENQUEUE_SCRIPT): append the exchange to its user's
# list, de-duplicated by request id, and queue a drain of the user unless one is claimed.


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
    """One completed request/reply pair, as recorded by the gateway (or imported).

    ``started_at`` is when Mnemo accepted the exchange: the erasure check compares it with the
    user's erasure time (mnemo.user_order), so an exchange accepted before an erasure is never
    written after it. ``completed_at`` is when it was said: memories take their times (created_at,
    validity, the indexed date) and the write quota its minute from it. For a chat both are the
    gateway's clock; for an import (mnemo.imports) ``started_at`` is when the import was accepted,
    the same for all its exchanges, and ``completed_at`` the conversation's own time, months ago
    maybe. So an import after an erasure is a new start, and an erasure during an import drops
    what the import had accepted before it (and refuses what it sends later).
    """

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
    # Optional and defaulted, so payloads of earlier builds still decode (the schema is unchanged).
    import_id: str | None = Field(default=None, description="The import it came from (progress is counted there).")
    expires_at: datetime | None = Field(
        default=None, description="Asked expiry of the memories it creates (mnemo.retention caps it by policy)."
    )


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


async def enqueue_exchange(redis: Any, order: UserOrder, exchange: Exchange, note: SideNote | None = None) -> int:
    fields = None
    if note is not None and note.fields:
        fields = (note.key, note.ttl_s, [part for pair in note.fields.items() for part in pair])
    return await order.enqueue(
        redis,
        exchange.scope.user_id,
        exchange.request_id,
        encode_exchange(exchange),
        epoch_ms(exchange.started_at.timestamp()),
        fields,
    )


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
        self.order = UserOrder(queue_name)

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

    async def enqueue(self, exchange: Exchange, note: SideNote | None = None) -> int:
        """Append the exchange to its user's list: 1 when queued, 0 for a duplicate of a request
        id already queued or applied, -1 when the user was erased after the exchange started (the
        exchange and its ``note`` are dropped). The note is written for a duplicate too."""
        pool = await self.pool()
        try:
            # A hung Redis must not hold a finished response open.
            async with asyncio.timeout(self._timeout_s):
                return await enqueue_exchange(pool, self.order, exchange, note)
        except Exception as exc:
            raise QueueError(f"enqueue failed: {exc}") from exc

    async def note(self, user_id: str, started_ms: int, note: SideNote) -> bool:
        """Write a side note on its own, unless the user was erased after ``started_ms``."""
        pool = await self.pool()
        fields = [part for pair in note.fields.items() for part in pair]
        return await self.order.note(pool, user_id, started_ms, note.key, note.ttl_s, fields)

    async def erase(self, user_id: str) -> bool:
        """Stamp the user's erasure and drop their pending exchanges; False while a drain still
        writes an earlier exchange (see mnemo.user_order.UserOrder.erase)."""
        return await self.order.erase(await self.pool(), user_id)

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
