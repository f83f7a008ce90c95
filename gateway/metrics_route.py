"""GET /metrics: the app's registry, plus what is read at scrape time (the queue's depth, the
outbox's size, every worker's totals from Redis, the vector cache's use)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from gateway.metrics import ScrapeValues
from gateway.services import Services
from mnemo.job_metrics import JobTotals, read_totals

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 0.5


async def read_scrape_values(services: Services) -> ScrapeValues:
    depth: int | None = None
    jobs: JobTotals | None = None
    queue_name = services.settings.redis.queue_name
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):
            pool = await services.queue.pool()
            depth = await services.queue.order.pending_total(pool)
            jobs = await read_totals(pool, queue_name)
    except Exception as exc:  # a scrape must answer even while Redis is down
        logger.debug("metrics: queue not readable: %s", exc)
    return ScrapeValues(depth, len(services.recorder.outbox), jobs, services.core.store.vector_cache_usage())


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.state.services
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(await read_scrape_values(services))
    body = generate_latest(services.metrics.registry) + generate_latest(scraped)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
