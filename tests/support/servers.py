"""Running real servers for tests: uvicorn on 127.0.0.1 in a background thread, and a whole
Mnemo (gateway + in-process worker, as ``mnemo up`` runs them) in its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn
from arq import Worker
from arq.connections import RedisSettings
from starlette.types import ASGIApp

from gateway.app import create_app
from mnemo.config import Settings
from mnemo.queue import redis_settings
from mnemo.runtime import Core, open_core
from workers.settings import build_worker

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopThread:
    """An event loop on a thread, so sync tests (and the sync openai client) can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return self.submit(coroutine).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class ServerThread:
    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.runner = LoopThread()
        self._done: Future[None] | None = None

    def start(self) -> ServerThread:
        self._done = self.runner.submit(self.server.serve())
        deadline = time.monotonic() + 30
        while not self.server.started:
            if self._done.done():
                self._done.result()  # re-raise the start-up failure
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._done is not None:
            with contextlib.suppress(Exception):
                self._done.result(15)
        self.runner.stop()


async def stop_worker(worker: Worker) -> None:
    try:
        if worker.main_task is not None:
            worker.main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.main_task
    finally:
        await worker.close()


class MnemoThread:
    """Gateway and worker sharing one core, like ``mnemo up``, against a given Redis."""

    def __init__(self, settings: Settings, redis: RedisSettings | None = None, worker: bool = True) -> None:
        self.settings = settings
        self.redis = redis or redis_settings(settings)
        self.runner = LoopThread()
        self.core: Core = self.runner.call(open_core(settings))
        self.gateway = ServerThread(create_app(settings, core=self.core, redis=self.redis), port=settings.server.port)
        self.gateway.runner.stop()
        self.gateway.runner = self.runner
        self.url = self.gateway.url
        self.worker = self.runner.call(self._build_worker()) if worker else None
        self._worker_task: Future[None] | None = None

    async def _build_worker(self) -> Worker:
        # arq's Worker binds to the event loop running when it is built.
        return build_worker(self.settings, self.redis, core=self.core)

    def start(self) -> MnemoThread:
        self.gateway.start()
        if self.worker is not None:
            self._worker_task = self.runner.submit(self.worker.async_run())
        return self

    def call(self, make: Callable[[Core], Awaitable[T]], timeout: float = 30) -> T:
        async def run() -> T:
            return await make(self.core)

        return self.runner.call(run(), timeout)

    def stop(self) -> None:
        self.gateway.server.should_exit = True
        if self.gateway._done is not None:
            with contextlib.suppress(Exception):
                self.gateway._done.result(15)
        try:
            if self.worker is not None:
                self.runner.call(stop_worker(self.worker), 15)
        finally:
            # A worker that died still leaves the core and the loop to close; left open, their
            # connections are collected during a later test and fail that one instead.
            try:
                self.runner.call(self.core.close(), 15)
            finally:
                self.runner.stop()
