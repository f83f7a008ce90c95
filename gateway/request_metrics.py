"""Counting every request and timing chats, and marking chats in flight (``Core.activity``):
a pure ASGI middleware (safe on streaming routes).

The route label is the matched route's full template (``/v1/memories/{memory_id}``,
``/mem0/v1/memories/{memory_id}/``; see gateway.route_labels), never the raw path, and the
model label is the model table row that served the chat (a configured name, or ``*``), never
the client's string: label values stay a small, fixed set.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics
from gateway.route_labels import RouteLabels
from gateway.upstream import ModelTable

# The three doors that run the memory loop: each is a chat for the in-process worker (it yields
# while one is in flight) and for the time-to-first-token and duration histograms.
CHAT_ROUTES = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages"})
# Set on request.state by the chat handler, read back here once the response is done.
MODEL_STATE_KEY = "metrics_model"
STREAM_STATE_KEY = "metrics_stream"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.labels = RouteLabels()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        timing = ResponseTiming()

        async def timed_send(message: Message) -> None:
            timing.see(message)
            await send(message)

        try:
            if scope.get("path") in CHAT_ROUTES and (services := (scope.get("state") or {}).get("services")):
                with services.core.activity.chat():  # the in-process worker yields meanwhile
                    await self.app(scope, receive, timed_send)
            else:
                await self.app(scope, receive, timed_send)
        finally:
            record(scope, timing, started, self.labels)


class ResponseTiming:
    def __init__(self) -> None:
        self.status = 500  # an exception before the response started becomes a 500
        self.first_byte: float | None = None

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body" and self.first_byte is None and message.get("body"):
            self.first_byte = time.perf_counter()


def record(scope: Scope, timing: ResponseTiming, started: float, labels: RouteLabels) -> None:
    state: dict[str, Any] = scope.get("state") or {}
    services = state.get("services")
    if services is None:  # the lifespan did not run (or failed): nothing to count into
        return
    metrics: Metrics = services.metrics
    template = labels.label(scope)
    model = str(state.get(MODEL_STATE_KEY) or "")
    metrics.inc("mnemo_requests_total", method=scope["method"], model=model, route=template, status=str(timing.status))
    if template in CHAT_ROUTES and timing.status == 200:
        ended = time.perf_counter()
        first = timing.first_byte or ended
        metrics.observe_chat(
            stream=bool(state.get(STREAM_STATE_KEY)), ttft_s=first - started, duration_s=ended - started
        )


def mark_chat(request: Request, models: ModelTable, model: str, stream: bool) -> None:
    """Label this request's metrics with its model row and whether it streams."""
    request.state.metrics_model = model if model in models.public_models() else "*"
    request.state.metrics_stream = stream
