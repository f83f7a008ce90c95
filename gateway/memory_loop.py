"""The memory loop every model API shares: read the body, find the user's memories, inject them,
forward, relay the reply unchanged, and record the exchange once the client has the whole reply.

What differs between Chat Completions, the Responses API and Anthropic's Messages API (where the
conversation and the system text are in the body, how a reply or a stream reads, which upstreams
can serve it, the shape of an error) is a :class:`Dialect`; the loop itself is written once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.access import access_of, scoped_context
from gateway.body import read_json_object
from gateway.errors import GatewayError
from gateway.identity import MemoryContext, read_memory_context
from gateway.injection import render_block
from gateway.memory.request_lookup import request_note
from gateway.recall import Recall, mnemo_headers, recall
from gateway.request_metrics import mark_chat
from gateway.services import Services
from gateway.streaming import StreamRelay, StreamReply
from gateway.upstream import Route, Upstream
from mnemo.logs import request_id_var
from mnemo.models import utcnow

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Dialect(Protocol):
    api: str  # the metrics label: chat, responses, messages
    user_field: str  # the body's own user id field (dotted), the fallback for X-Mnemo-User-Id

    def validate(self, body: dict[str, Any]) -> None:
        """400 for a body this API's upstream could not take; only the fields Mnemo reads."""

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The conversation as chat-style messages (role, content): searched and recorded."""

    def inject(self, body: dict[str, Any], block: str) -> dict[str, Any]:
        """The body to forward, the memory block appended to its system text."""

    def upstream(self, services: Services, route: Route) -> Upstream:
        """The relay for the route, or a 400 naming a provider that cannot serve this API."""

    def reply_text(self, content: bytes) -> str | None:
        """The reply's text from a non-streaming answer; None when it is not one."""

    def stream_reply(self) -> StreamReply: ...

    def error_response(self, error: GatewayError) -> Response: ...


class Turn:
    """One exchange's bookkeeping: its response headers, its lookup note, and its recording."""

    def __init__(
        self,
        services: Services,
        context: MemoryContext,
        model: str,
        messages: list[dict[str, Any]],
        started_at: datetime,
        found: Recall,
    ) -> None:
        self._services = services
        self._context = context
        self._model = model
        self._messages = messages
        self._started_at = started_at
        self._note = request_note(services, context, found.memories)
        self.headers = mnemo_headers(context, found)

    def background(self) -> BackgroundTask | None:
        return self._note.background() if self._note else None

    async def record(self, reply: str) -> None:
        note = self._note
        recorded = await self._services.recorder.record(
            self._context, self._model, self._messages, reply, self._started_at, note.side_note() if note else None
        )
        if recorded and note:
            note.written = True  # the enqueue carried it: the background task has nothing to do


def memory_context(request: Request, services: Services, body: dict[str, Any], dialect: Dialect) -> MemoryContext:
    context = read_memory_context(request.headers, body, services.settings.memory.default_mode, dialect.user_field)
    context = scoped_context(context, access_of(request))
    request_id_var.set(context.request_id)
    return context


async def serve(request: Request, dialect: Dialect) -> Response:
    services: Services = request.state.services
    started_at = utcnow()
    # The chat is done with once its record step ran or was skipped: counted here, or by the
    # relay at the end of a stream (mnemo_chat_lifecycles_total).
    relayed = False
    try:
        try:
            body = await read_json_object(request, services.settings.server.max_body_bytes)
            dialect.validate(body)
            context = memory_context(request, services, body, dialect)
            route = services.models.resolve(body["model"])
            streams = body.get("stream") is True
            mark_chat(request, services.models, body["model"], streams)
            upstream = dialect.upstream(services, route)
            messages = dialect.messages(body)
            found = await recall(services, context, messages)
            services.metrics.inc("mnemo_memory_status_total", api=dialect.api, status=found.status)
            forwarded = dialect.inject(body, render_block(found.memories)) if found.memories else body
            turn = Turn(services, context, body["model"], messages, started_at, found)
            if streams:
                stream = await upstream.stream(route, forwarded, request.headers)
                relay = StreamRelay(stream, turn.record, dialect.stream_reply(), on_end=lifecycle_end(services))
                relayed = True
                headers = {**turn.headers, **STREAM_HEADERS}
                return StreamingResponse(
                    relay, media_type="text/event-stream", headers=headers, background=turn.background()
                )
            content = await upstream.complete(route, forwarded, request.headers)
        except GatewayError as exc:
            services.metrics.inc("mnemo_chat_errors_total", status=str(exc.status))
            return dialect.error_response(exc)
        reply = dialect.reply_text(content)
        if reply is not None:
            await turn.record(reply)
        return Response(content, media_type="application/json", headers=turn.headers, background=turn.background())
    finally:
        if not relayed:
            lifecycle_end(services)()


def lifecycle_end(services: Services) -> Callable[[], None]:
    """Count a chat as done with: after its record step (run or skipped), so a test that sees the
    count move knows nothing more of that chat will be enqueued (tests/support/probes.py)."""
    return functools.partial(services.metrics.inc, "mnemo_chat_lifecycles_total")
