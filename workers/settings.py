"""Building the arq Worker from Mnemo's settings (arq's WorkerSettings, as a function so
nothing is read at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from arq import Worker
from arq.connections import RedisSettings
from arq.worker import func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from mnemo.activity import ChatActivity
from mnemo.config import Settings
from mnemo.extraction import Extractor
from mnemo.ingest import MemoryWriter
from mnemo.llm import build_llm, stop_litellm_background
from mnemo.queue import dump_job_record, load_job_record
from mnemo.retention import RetentionPolicy
from mnemo.runtime import Core, open_core
from mnemo.store import MemoryStore
from mnemo.user_order import DRAIN_JOB, SWEEP_S, UserOrder
from workers.drain import drain_user, sweep_forever
from workers.expiry import expiry_cron
from workers.intake import catching_up, job_intake, lag_seconds
from workers.legacy import LEGACY_JOB, process_exchange
from workers.waits import JobWaits, WaitCountingLLM

logger = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# redis-py reports a connection lost between WATCH and EXEC as a WatchError, not a
# ConnectionError. arq catches the WatchError of a failed EXEC itself (another worker claimed
# the job), so one reaching the poll loop means the claim's connection died.
LOST_REDIS = (*REDIS_DOWN, WatchError)
MAX_REDIS_BACKOFF_S = 1.0  # polling a lost Redis once a second costs nothing and resumes work at once
# The worker waits for Redis at start-up instead of dying: under ``mnemo up`` it is a task
# beside the gateway, and nothing would start it again.
STARTUP_CONN_RETRIES = 1_000_000
# A drain hands its user to a new job after this long (or a third of the job timeout), so one
# user's backlog shares the worker's slots with other users' exchanges.
DRAIN_BUDGET_S = 30.0


class ResilientWorker(Worker):
    """arq's poll loop ends the worker on the first Redis error; this one rides out an
    outage, polling again with backoff, so jobs resume when Redis is back."""

    _redis_backoff_s = 0.0

    def __init__(
        self,
        *args: Any,
        activity: ChatActivity | None = None,
        waits: JobWaits | None = None,
        catch_up_after_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._activity = activity
        self._waits = waits or JobWaits()
        self._read_limit = self.queue_read_limit
        self._job_ended = asyncio.Event()
        self._catch_up_after_s = catch_up_after_s
        self._lag_s = 0.0  # how long the job started last had been due before it started

    def _yield_to_chats(self) -> None:
        """Under ``mnemo up``, yield the CPU to chats in flight (workers.intake)."""
        if self._activity is None:
            return
        intake = job_intake(
            chats_in_flight=self._activity.busy,
            running=self.job_counter,
            waiting=self._waits.waiting,
            full_read_limit=self._read_limit,
        )
        self.queue_read_limit, self.allow_pick_jobs = intake.read_limit, intake.allow_pick

    async def _poll_iteration(self) -> None:
        try:
            due = asyncio.get_running_loop().time() + self.poll_delay_s
            await self._poll_once()
            await self._refill_until(due)
        except LOST_REDIS as exc:
            self._redis_backoff_s = min(MAX_REDIS_BACKOFF_S, max(0.1, self._redis_backoff_s * 2))
            logger.warning("worker lost redis (%s); polling again in %.1fs", exc, self._redis_backoff_s)
            await asyncio.sleep(self._redis_backoff_s)
        else:
            self._redis_backoff_s = 0.0

    async def _poll_once(self) -> None:
        self._job_ended.clear()  # a job ending from here on makes room for another (_refill_until)
        self._yield_to_chats()
        await super()._poll_iteration()

    async def _refill_until(self, due: float) -> None:
        """While chats are in flight, jobs on the CPU start one at a time, one per poll: a burst
        of chats is answered first and its exchanges applied after it. Under steady traffic that
        is 20 jobs a second, below what a gateway records in raw mode, so the backlog would grow
        for as long as the traffic lasts. Once the worker is ``catch_up_after_s`` behind, a job
        that ends makes room for the next one at once, until the next poll is due."""
        loop = asyncio.get_running_loop()
        while self._catching_up() and self.job_counter > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_ended.wait(), due - loop.time())
            if not self._job_ended.is_set():
                return  # the poll is due: arq's loop goes on at once
            await self._poll_once()

    def _catching_up(self) -> bool:
        busy = self._activity is not None and self._activity.busy
        return catching_up(chats_in_flight=busy, lag_s=self._lag_s, catch_up_after_s=self._catch_up_after_s)

    async def run_job(self, job_id: str, score: int) -> None:
        # A job's score is when it became due (enqueued, or deferred to): the worker's lag.
        self._lag_s = lag_seconds(time.time(), score)
        await super().run_job(job_id, score)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._job_ended.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except LOST_REDIS:
            # arq takes a job slot (semaphore and counter) before its Redis calls to claim the
            # job, and only gives it back on a failed EXEC. Redis going away mid-claim would
            # keep it: each outage would cost a slot until the worker started nothing at all.
            self.job_counter -= 1
            self.sem.release()
            raise

    async def close(self) -> None:
        """arq's close starts with a Redis call; without Redis, still shut down the rest."""
        try:
            await super().close()
        except REDIS_DOWN as exc:
            logger.warning("worker closing without redis: %s", exc)
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            await self.pool.close(close_connection_pool=True)
            self._pool = None


def build_extractor(settings: Settings, waits: JobWaits | None = None) -> Extractor | None:
    """The extractor, if a model is configured; given ``waits``, its LLM calls count as waits."""
    if settings.extraction.effective_mode == "raw" and not settings.extraction.model:
        logger.info("worker in raw mode: each user message is stored as a memory (no extraction model configured)")
        return None
    llm = build_llm(settings.extraction)
    return Extractor(WaitCountingLLM(llm, waits) if waits is not None else llm)


def drain_budget_s(job_timeout_s: float) -> float:
    return min(DRAIN_BUDGET_S, job_timeout_s / 3)


def writer_factory(
    settings: Settings, core: Core, extractor: Extractor | None, redis: Any
) -> Callable[[MemoryStore], MemoryWriter]:
    """A MemoryWriter per exchange (each over its own fenced store, workers.drain); what does not
    change between exchanges, the retention policy among it, is built once here."""
    retention = RetentionPolicy(settings.retention)
    extraction = settings.extraction

    def make_writer(store: MemoryStore) -> MemoryWriter:
        return MemoryWriter(
            store,
            core.embedder,
            extractor,
            extraction.effective_mode,
            extraction.similar_limit,
            limits=settings.limits,
            redis=redis,
            queue_name=settings.redis.queue_name,
            retention=retention,
            raw_filter=extraction.raw_filter,
        )

    return make_writer


def build_worker(settings: Settings, redis: RedisSettings, *, core: Core | None = None, burst: bool = False) -> Worker:
    """``core`` is shared with the gateway under ``mnemo up``; otherwise the worker opens its own."""
    waits = JobWaits()

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["own_core"] = core is None
        ctx["core"] = core or await open_core(settings)
        if core is None:
            await ctx["core"].warm_worker_path()
        ctx["extractor"] = extractor = build_extractor(settings, waits)
        ctx["waits"] = waits
        logger.info("worker extraction mode: %s", settings.extraction.effective_mode)
        ctx["make_writer"] = writer_factory(settings, ctx["core"], extractor, ctx["redis"])
        ctx["order"] = order = UserOrder(settings.redis.queue_name)
        ctx["retry_base_delay_s"] = settings.worker.retry_base_delay_s
        ctx["drain_budget_s"] = drain_budget_s(settings.worker.job_timeout_s)
        ctx["max_failures"] = settings.worker.max_tries
        ctx["queue_name"] = settings.redis.queue_name
        ctx["sweeper"] = asyncio.create_task(sweep_forever(ctx["redis"], order, SWEEP_S), name="mnemo-drain-sweep")

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        if (sweeper := ctx.get("sweeper")) is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if ctx.get("extractor") is not None:
            await ctx["extractor"].llm.aclose()
        await stop_litellm_background()
        if ctx.get("own_core"):
            await ctx["core"].close()

    # No results kept: a drain's result says nothing a metric does not, and would keep the
    # user's id in Redis after an erasure.
    drain = func(drain_user, name=DRAIN_JOB, max_tries=3, timeout=settings.worker.job_timeout_s, keep_result=0)
    legacy = func(process_exchange, name=LEGACY_JOB, max_tries=3, keep_result=0)
    return ResilientWorker(
        activity=core.activity if core is not None else None,
        waits=waits,
        catch_up_after_s=settings.worker.catch_up_after_s,
        functions=[drain, legacy],
        cron_jobs=[expiry_cron(settings.retention)],
        queue_name=settings.redis.queue_name,
        redis_settings=dataclasses.replace(redis, conn_retries=STARTUP_CONN_RETRIES, conn_retry_delay=1),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=settings.worker.max_jobs,
        burst=burst,
        poll_delay=0.05,
        handle_signals=False,
        keep_result=3600,
        job_serializer=dump_job_record,
        job_deserializer=load_job_record,
    )
