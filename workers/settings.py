"""Building the arq Worker from Mnemo's settings (arq's WorkerSettings, as a function so
nothing is read at import time)."""

from __future__ import annotations

import logging
from typing import Any

from arq import Worker
from arq.connections import RedisSettings
from arq.worker import func

from mnemo.config import Settings
from mnemo.extraction import Extractor
from mnemo.ingest import MemoryWriter
from mnemo.llm import LiteLLMClient, stop_litellm_background
from mnemo.queue import JOB_NAME
from mnemo.runtime import Core, open_core
from workers.jobs import process_exchange

logger = logging.getLogger(__name__)


def build_extractor(settings: Settings) -> Extractor | None:
    if settings.extraction.effective_mode == "raw" and not settings.extraction.model:
        logger.info("worker in raw mode: each user message is stored as a memory (no extraction model configured)")
        return None
    return Extractor(LiteLLMClient(settings.extraction))


def build_worker(settings: Settings, redis: RedisSettings, *, core: Core | None = None, burst: bool = False) -> Worker:
    """``core`` is shared with the gateway under ``mnemo up``; otherwise the worker opens its own."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        own_core = core is None
        ctx["core"] = core or await open_core(settings)
        ctx["own_core"] = own_core
        extractor = build_extractor(settings)
        mode = settings.extraction.effective_mode
        logger.info("worker extraction mode: %s", mode)
        ctx["writer"] = MemoryWriter(
            ctx["core"].store, ctx["core"].embedder, extractor, mode, settings.extraction.similar_limit
        )
        ctx["retry_base_delay_s"] = settings.worker.retry_base_delay_s

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await stop_litellm_background()
        if ctx.get("own_core"):
            await ctx["core"].close()

    job = func(
        process_exchange, name=JOB_NAME, max_tries=settings.worker.max_tries, timeout=settings.worker.job_timeout_s
    )
    return Worker(
        functions=[job],
        queue_name=settings.redis.queue_name,
        redis_settings=redis,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=settings.worker.max_jobs,
        burst=burst,
        poll_delay=0.05,
        handle_signals=False,
        keep_result=3600,
    )
