"""Jobs queued by a Mnemo from before per-user lists (one arq job per exchange, named
``process_exchange``): on upgrade they are moved into their user's list, so no exchange queued
before the upgrade is lost, and an exchange of a user erased since is dropped like any other."""

from __future__ import annotations

import logging
from typing import Any

from mnemo.queue import decode_exchange, enqueue_exchange

logger = logging.getLogger(__name__)

LEGACY_JOB = "process_exchange"


async def process_exchange(ctx: dict[str, Any], payload: str, sequence: int | None = None) -> dict[str, Any]:
    exchange = decode_exchange(payload)
    queued = await enqueue_exchange(ctx["redis"], ctx["order"], exchange)
    logger.info("moved exchange %s queued by an earlier version into its user's list", exchange.request_id)
    return {"status": "moved" if queued > 0 else "dropped", "request_id": exchange.request_id}
