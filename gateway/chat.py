"""POST /v1/chat/completions: search memory, inject it, forward, relay the reply, record it.

Only ``messages``, ``model`` and ``stream`` are read; every other field of the body is
forwarded to the upstream untouched, so new OpenAI parameters work without a release.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.access import access_of, scoped_context
from gateway.body import read_json_object
from gateway.errors import GatewayError, bad_request
from gateway.identity import MemoryContext, read_memory_context
from gateway.injection import inject, render_block, select_memories
from gateway.request_log import request_note
from gateway.request_metrics import mark_chat
from gateway.services import Services
from gateway.streaming import StreamRelay
from mnemo.logs import request_id_var
from mnemo.messages import build_query, content_text
from mnemo.models import ScoredMemory, utcnow

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def validate_chat_body(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model` is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` is required and must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a string `role`", param=f"messages[{index}]")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(f"messages[{index}].content must be a string or an array", param=f"messages[{index}]")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("`stream` must be a boolean", param="stream")


async def find_memories(services: Services, context: MemoryContext, messages: list[Any]) -> list[ScoredMemory]:
    if not context.reads or context.scope is None:
        return []
    memory = services.settings.memory
    query = build_query(messages, memory.query_context_messages, memory.query_short_chars)
    retrieval = await services.retriever.retrieve(
        context.scope,
        query,
        limit=memory.top_k,
        threshold=memory.score_threshold,
        timeout_s=memory.retrieval_timeout_ms / 1000,
    )
    if retrieval.failure:
        services.metrics.inc("mnemo_retrieval_fail_open_total", reason=retrieval.failure)
    selected = select_memories(retrieval.memories, memory.token_budget, services.count_tokens)
    services.metrics.observe_retrieval(retrieval.elapsed_ms, len(selected))
    return selected


def mnemo_headers(context: MemoryContext, memories: list[ScoredMemory]) -> dict[str, str]:
    return {
        "x-mnemo-request-id": context.request_id,
        "x-mnemo-memories": str(len(memories)),
        "x-mnemo-memory-ids": ",".join(hit.memory.id for hit in memories),
    }


async def chat_completions(request: Request) -> Response:
    services: Services = request.state.services
    started_at = utcnow()
    try:
        body = await read_json_object(request, services.settings.server.max_body_bytes)
        validate_chat_body(body)
        context = read_memory_context(request.headers, body, services.settings.memory.default_mode)
        context = scoped_context(context, access_of(request))
        request_id_var.set(context.request_id)
        route = services.models.resolve(body["model"])
        mark_chat(request, services.models, body["model"], body.get("stream") is True)
        messages: list[Any] = body["messages"]
        memories = await find_memories(services, context, messages)
        forwarded = {**body, "messages": inject(messages, render_block(memories))} if memories else body
        headers = mnemo_headers(context, memories)
        note = request_note(services, context, memories)
        noted = note.background() if note else None
        upstream = services.upstream_for(route)

        async def record(reply: str) -> None:
            side_note = note.side_note() if note else None
            if await services.recorder.record(context, body["model"], messages, reply, started_at, side_note) and note:
                note.written = True  # the enqueue carried it: the background task has nothing to do

        if body.get("stream") is True:
            stream = await upstream.stream(route, forwarded, request.headers)
            relay = StreamRelay(stream, record)
            return StreamingResponse(
                relay, media_type="text/event-stream", headers={**headers, **STREAM_HEADERS}, background=noted
            )
        content = await upstream.complete(route, forwarded, request.headers)
    except GatewayError as exc:
        services.metrics.inc("mnemo_chat_errors_total", status=str(exc.status))
        return exc.response()
    reply = reply_text(content)
    if reply is not None:
        await record(reply)
    return Response(content, media_type="application/json", headers=headers, background=noted)


def reply_text(content: bytes) -> str | None:
    """The assistant's text, or None when the upstream's body is not a chat completion."""
    try:
        message = json.loads(content)["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content_text(message.get("content")) if isinstance(message, dict) else None
