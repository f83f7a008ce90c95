"""POST /v1/chat/completions: search memory, inject it, forward, relay the reply, record it.

Only ``messages``, ``model`` and ``stream`` are read; every other field of the body is
forwarded to the upstream untouched, so new OpenAI parameters work without a release.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.body_checks import check_stream_flag, require_messages, require_model
from gateway.errors import GatewayError
from gateway.injection import inject
from gateway.memory_loop import serve
from gateway.services import Services
from gateway.streaming import SSEReply, StreamReply
from gateway.upstream import Route, Upstream
from mnemo.messages import content_text


def validate_chat_body(body: dict[str, Any]) -> None:
    require_model(body)
    require_messages(body, content_required=False)
    check_stream_flag(body)


def reply_text(content: bytes) -> str | None:
    """The assistant's text, or None when the upstream's body is not a chat completion."""
    try:
        message = json.loads(content)["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content_text(message.get("content")) if isinstance(message, dict) else None


class ChatCompletions:
    api = "chat"
    user_field = "user"

    def validate(self, body: dict[str, Any]) -> None:
        validate_chat_body(body)

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    def inject(self, body: dict[str, Any], block: str) -> dict[str, Any]:
        return {**body, "messages": inject(body["messages"], block)}

    def upstream(self, services: Services, route: Route) -> Upstream:
        return services.upstream_for(route)  # any provider: litellm translates the others

    def reply_text(self, content: bytes) -> str | None:
        return reply_text(content)

    def stream_reply(self) -> StreamReply:
        return SSEReply()

    def error_response(self, error: GatewayError) -> Response:
        return error.response()


CHAT = ChatCompletions()


async def chat_completions(request: Request) -> Response:
    return await serve(request, CHAT)
