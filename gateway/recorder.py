"""Recording completed exchanges: enqueue them, or keep them in the durable outbox while
Redis is unreachable, and deliver the outbox in order once it is back.

Called by the non-streaming handler after the reply is read, and by the stream relay's
``finally`` once the whole stream reached the client: never via Starlette's BackgroundTask,
which is skipped when a streaming client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from datetime import datetime
from typing import Any

from gateway.identity import MemoryContext
from gateway.metrics import Metrics
from mnemo.errors import QueueError
from mnemo.messages import to_exchange_messages
from mnemo.models import utcnow
from mnemo.outbox import Outbox
from mnemo.queue import Exchange, ExchangeQueue, SideNote, decode_exchange, encode_exchange, exchange_job_id

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
MAX_FLUSH_INTERVAL_S = 10.0


class ExchangeRecorder:
    def __init__(self, queue: ExchangeQueue, outbox: Outbox, metrics: Metrics) -> None:
        self.queue = queue
        self.outbox = outbox
        self._metrics = metrics
        self._wake = asyncio.Event()

    async def record(
        self,
        context: MemoryContext,
        model: str,
        messages: list[dict[str, Any]],
        reply: str,
        started_at: datetime,
        note: SideNote | None = None,
    ) -> bool:
        """Record the exchange if its context writes memory; True when it reached the queue, and
        ``note`` with it (False: not recorded, or kept in the outbox without the note)."""
        if context.scope is None or not context.writes:
            return False
        exchange = Exchange(
            request_id=context.request_id,
            scope=context.scope,
            model=model,
            messages=to_exchange_messages(messages),
            reply=reply,
            started_at=started_at,
            completed_at=utcnow(),
            extraction_mode=context.extraction_mode,
            expires_at=started_at + context.expires_in if context.expires_in is not None else None,
        )
        return await self.deliver(exchange, note)

    async def deliver(self, exchange: Exchange, note: SideNote | None = None) -> bool:
        """Enqueue, or keep in the outbox; True when it was enqueued (with ``note``)."""
        # While anything waits in the outbox, newer exchanges queue behind it to keep their order.
        if len(self.outbox) == 0:
            try:
                await self.queue.enqueue(exchange, note)
            except QueueError as exc:
                logger.warning("queue unavailable, keeping exchange %s in the outbox: %s", exchange.request_id, exc)
                self._metrics.inc("mnemo_enqueue_failures_total", reason="queue_unavailable")
            else:
                self._metrics.inc("mnemo_exchanges_enqueued_total")
                return True
        self.keep(exchange)
        return False

    def keep(self, exchange: Exchange) -> None:
        job_id = exchange_job_id(exchange.request_id)
        try:
            kept = self.outbox.put(job_id, exchange.scope.user_id, encode_exchange(exchange))
        except sqlite3.Error as exc:
            # Redis and the disk both failed: the exchange is lost either way, but the reply the
            # client is owed must not become a 500 because of it.
            self._metrics.inc("mnemo_enqueue_failures_total", reason="outbox_unavailable")
            logger.error("outbox unavailable (%s): exchange %s dropped", exc, exchange.request_id)
            return
        if kept:
            self._metrics.inc("mnemo_outbox_writes_total")
            self._wake.set()
        else:
            self._metrics.inc("mnemo_enqueue_failures_total", reason="outbox_full")
            logger.error("outbox full (%d exchanges): exchange %s dropped", self.outbox.max_items, exchange.request_id)

    async def flush(self) -> bool:
        """Deliver the outbox oldest first; False when the queue refused (try again later)."""
        while items := self.outbox.oldest(100):
            for item in items:
                try:
                    await self.queue.enqueue(decode_exchange(item.payload))
                except QueueError:
                    return False
                self.outbox.remove(item.row)
                self._metrics.inc("mnemo_exchanges_enqueued_total")
        return True

    async def run_flusher(self) -> None:
        """Background task of the gateway's lifespan: retries the outbox with backoff."""
        interval = FLUSH_INTERVAL_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if len(self.outbox) == 0:
                interval = FLUSH_INTERVAL_S
                continue
            try:
                delivered = await self.flush()
            except Exception:
                # The outbox itself failed (a disk error, a locked file). The task must outlive
                # it: once anything waits in the outbox, every later exchange queues behind it,
                # so a dead flusher would stop all memory writes without a word.
                logger.exception("outbox delivery failed; trying again")
                delivered = False
            interval = FLUSH_INTERVAL_S if delivered else min(interval * 2, MAX_FLUSH_INTERVAL_S)
            if delivered:
                logger.info("outbox delivered to the queue")
