"""Recording completed exchanges: build the queue payload and enqueue it.

Called by the non-streaming handler after the reply is read, and by the stream relay's
``finally`` once the whole stream reached the client: never via Starlette's BackgroundTask,
which is skipped when a streaming client disconnects.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from gateway.identity import MemoryContext
from gateway.metrics import Metrics
from mnemo.errors import QueueError
from mnemo.messages import to_exchange_messages
from mnemo.models import utcnow
from mnemo.queue import Exchange, ExchangeQueue

logger = logging.getLogger(__name__)


class ExchangeRecorder:
    def __init__(self, queue: ExchangeQueue | None, metrics: Metrics) -> None:
        self._queue = queue
        self._metrics = metrics

    async def record(
        self, context: MemoryContext, model: str, messages: list[dict[str, Any]], reply: str, started_at: datetime
    ) -> None:
        if context.scope is None or not context.writes:
            return
        exchange = Exchange(
            request_id=context.request_id,
            scope=context.scope,
            model=model,
            messages=to_exchange_messages(messages),
            reply=reply,
            started_at=started_at,
            completed_at=utcnow(),
            extraction_mode=context.extraction_mode,
        )
        if self._queue is None:
            self._metrics.inc("mnemo_enqueue_failures_total")
            logger.error("no queue configured; exchange %s not recorded", context.request_id)
            return
        try:
            await self._queue.enqueue(exchange)
        except QueueError as exc:
            self._metrics.inc("mnemo_enqueue_failures_total")
            logger.error("could not enqueue exchange %s: %s", context.request_id, exc)
            return
        self._metrics.inc("mnemo_exchanges_enqueued_total")
