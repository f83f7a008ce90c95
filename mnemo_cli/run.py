"""Process runners: ``up`` shares one store, one embedder and one Redis between gateway and
worker in a single event loop; ``serve`` and ``worker`` are the halves for server mode."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from arq.connections import RedisSettings

from gateway.app import create_app
from mnemo import malloc_tuning
from mnemo.config import Settings
from mnemo.embedded_redis import EmbeddedRedis
from mnemo.errors import ConfigError
from mnemo.llm import import_litellm, uses_litellm
from mnemo.queue import redis_settings
from mnemo.runtime import Core, open_core
from mnemo.tokens import CL100K
from mnemo_cli.protocol import ConnectionLimits, limited_protocol
from workers.settings import build_worker

logger = logging.getLogger("mnemo")
T = TypeVar("T")


class GatewayServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
    before the worker, the store and the embedded Redis are closed. Mnemo finishes its own
    shutdown instead and exits 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on (None: asyncio's default). uvloop runs the gateway's own Python
    (HTTP relay, Redis, store calls, the hand-offs to the embedder's threads) with less overhead."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop is uvloop but uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def run_on_loop(main: Coroutine[Any, Any, T], choice: str) -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(trimming(main))


async def trimming(main: Coroutine[Any, Any, T]) -> T:
    """``main``, with freed memory given back to the system every minute (mnemo.malloc_tuning)."""
    trimmer = asyncio.create_task(malloc_tuning.trim_forever(), name="mnemo-malloc-trim")
    try:
        return await main
    finally:
        trimmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trimmer


def uvicorn_server(settings: Settings, core: Core | None, redis: RedisSettings | None) -> uvicorn.Server:
    app = create_app(settings, core=core, redis=redis)
    raise_open_files_limit(2 * settings.server.max_connections + FILES_HEADROOM)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        http=limited_protocol(ConnectionLimits.of(settings.server)),
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return GatewayServer(config)


# Descriptors besides client connections: the store, Redis, logs, the embedder's files.
FILES_HEADROOM = 256


def raise_open_files_limit(wanted: int) -> None:
    """Each client connection may hold an upstream one, so max_connections needs about twice as
    many descriptors; a soft limit of 1024 (a common default) would run out first, failing
    accepts and the store's and Redis's own files. Raise it as far as the hard limit allows."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logger.warning(
            "open-files limit %d is below the %d that server.max_connections needs; lower it or raise the limit",
            target,
            wanted,
        )


def warn_if_exposed(settings: Settings) -> None:
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(settings.server.host).is_loopback:
            logger.warning("listening on %s: anyone who can reach it can use this gateway", settings.server.host)


async def run_up(settings: Settings) -> None:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    if settings.redis.url:
        redis = redis_settings(settings)
    else:
        embedded = EmbeddedRedis(settings.data_path)
        await embedded.start()
        redis = redis_settings(settings, str(embedded.socket_path))
    try:
        core = await open_core(settings)
        try:
            await serve_with_worker(settings, core, redis)
        finally:
            await core.close()
    finally:
        if embedded is not None:
            await embedded.stop()


async def serve_with_worker(settings: Settings, core: Core, redis: RedisSettings) -> None:
    if uses_litellm(settings.extraction):
        import_litellm()  # a multi-second synchronous import: do it before the gateway serves requests
    # The worker counts the line of every memory it stores (mnemo.tokens): load the encoder now, as
    # its first exchange would, so ready means ready and the first chat does not wait for it.
    CL100K.load()
    await core.warm_worker_path()
    worker = build_worker(settings, redis, core=core)
    worker_task = asyncio.create_task(worker.async_run(), name="mnemo-worker")
    server = uvicorn_server(settings, core, redis)
    warn_if_exposed(settings)
    logger.info("mnemo up: gateway on http://%s:%d, worker in-process", settings.server.host, settings.server.port)
    try:
        await server.serve()
    finally:
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.close()


async def run_serve(settings: Settings) -> None:
    if settings.store.kind == "edge":
        logger.warning(
            "mnemo serve with the embedded store: run no separate worker on the same data dir (use mnemo up)"
        )
    warn_if_exposed(settings)
    await uvicorn_server(settings, None, None).serve()


async def run_worker(settings: Settings) -> None:
    if settings.store.kind == "edge":
        raise ConfigError(
            "mnemo worker needs store.kind=qdrant: the embedded store belongs to one process (use mnemo up)"
        )
    if not settings.redis.url:
        raise ConfigError("mnemo worker needs redis.url (the embedded Redis only exists inside mnemo up)")
    worker = build_worker(settings, redis_settings(settings))
    try:
        await worker.async_run()
    finally:
        await worker.close()
