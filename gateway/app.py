"""create_app(settings): the gateway's Starlette application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TypedDict

import httpx
from arq.connections import RedisSettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.access import KeyAuth, check_exposure
from gateway.chat import chat_completions
from gateway.errors import GatewayError, error_response, memory_unavailable
from gateway.health import healthz, list_models, readyz
from gateway.limits import BodyBudget, BodyBudgetMiddleware
from gateway.memory.routes import memory_routes
from gateway.messages import messages
from gateway.metrics import Metrics
from gateway.metrics_route import metrics_endpoint
from gateway.passthrough import passthrough_routes
from gateway.providers import LiteLLMUpstream
from gateway.recorder import ExchangeRecorder
from gateway.request_metrics import RequestMetrics
from gateway.responses import responses
from gateway.services import Services
from gateway.ui.routes import console_routes
from gateway.upstream import ModelTable, OpenAICompatibleUpstream
from gateway.upstream_transport import upstream_transport
from mnemo.config import Settings
from mnemo.errors import MnemoError, QueueError
from mnemo.llm import stop_litellm_background
from mnemo.outbox import Outbox
from mnemo.queue import ExchangeQueue, redis_settings
from mnemo.retrieval import Retriever
from mnemo.runtime import Core, open_core
from mnemo.tokens import CL100K

logger = logging.getLogger(__name__)


class State(TypedDict):
    services: Services


def create_app(settings: Settings, *, core: Core | None = None, redis: RedisSettings | None = None) -> Starlette:
    """Build the gateway. ``core`` and ``redis`` are passed in by ``mnemo up``, which shares
    them with the worker; on its own the gateway opens its own."""
    check_exposure(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            services = await build_services(settings, stack, core, redis)
            yield {"services": services}

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *memory_routes(settings.server.memory_api_prefix),
        *console_routes(settings.server.memory_api_prefix),
    ]
    routes += passthrough_routes(settings.server, reserved=routes)  # last: whatever no route above serves
    handlers = {
        HTTPException: http_error,
        GatewayError: gateway_error,
        MnemoError: memory_backend_error,
        Exception: unexpected_error,
    }
    auth = Middleware(KeyAuth, auth=settings.auth, memory_prefix=settings.server.memory_api_prefix)
    budget = Middleware(BodyBudgetMiddleware, budget=BodyBudget(settings.server.max_bytes_in_flight))
    middleware = [budget, Middleware(RequestMetrics), auth]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)


async def build_services(
    settings: Settings, stack: AsyncExitStack, core: Core | None, redis: RedisSettings | None
) -> Services:
    timeout = httpx.Timeout(settings.server.upstream_timeout_s, connect=settings.server.upstream_connect_timeout_s)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    # One client serves every user, so it keeps no cookies: one user's upstream session must
    # never go out with another user's request.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    transport = upstream_transport(limits)
    http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False, cookies=no_cookies)
    )
    if core is None:
        core = await open_core(settings)
        stack.push_async_callback(core.close)
    queue = await connect_queue(settings, redis)
    stack.push_async_callback(queue.close)
    stack.push_async_callback(stop_litellm_background)
    metrics = Metrics()
    recorder = await start_recorder(settings, stack, queue, metrics)
    return Services(
        settings=settings,
        http=http,
        models=ModelTable(settings.models),
        openai_upstream=OpenAICompatibleUpstream(http, transport),
        litellm_upstream=LiteLLMUpstream(),
        core=core,
        retriever=Retriever(
            core.embedder, core.store, without_speaker_names=settings.memory.search_without_speaker_names
        ),
        queue=queue,
        recorder=recorder,
        metrics=metrics,
        count_tokens=CL100K,  # loads tiktoken only for a memory stored without its count
    )


async def start_recorder(
    settings: Settings, stack: AsyncExitStack, queue: ExchangeQueue, metrics: Metrics
) -> ExchangeRecorder:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(settings.data_path / "outbox.sqlite3", settings.redis.outbox_max_items)
    stack.callback(outbox.close)
    if len(outbox):
        logger.warning("outbox holds %d exchanges from an earlier run; delivering them", len(outbox))
    recorder = ExchangeRecorder(queue, outbox, metrics)
    flusher = asyncio.create_task(recorder.run_flusher(), name="mnemo-outbox-flusher")

    async def stop_flusher() -> None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher

    stack.push_async_callback(stop_flusher)
    return recorder


async def connect_queue(settings: Settings, redis: RedisSettings | None) -> ExchangeQueue:
    queue = ExchangeQueue(
        redis or redis_settings(settings), settings.redis.queue_name, settings.redis.enqueue_timeout_s
    )
    try:
        await queue.pool()
    except QueueError as exc:
        # Chats still work; the queue reconnects on the next exchange and /readyz says it is down.
        logger.error("queue unavailable at start-up: %s", exc)
    return queue


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None  # e.g. the Allow header of a 405
    if _is_api(request):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = GatewayError(exc.status_code, str(exc.detail), type=kind, code=code)
        return error_response(request.url.path, error, headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(request.url.path, exc)


async def memory_backend_error(request: Request, exc: Exception) -> Response:
    """The one place a core error (store, embedder, queue) raised by a handler becomes a response:
    the backend being down is the service's state, not a bug, so a 503, never a 500."""
    assert isinstance(exc, MnemoError)
    return error_response(request.url.path, memory_unavailable(exc))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    error = GatewayError(500, "internal error in the Mnemo gateway", type="server_error")
    return error_response(request.url.path, error)
