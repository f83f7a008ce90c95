"""POST /v1/messages: Anthropic's Messages API with memory.

The query is the last user turn; the memory block is appended to ``system`` (a string stays a
string, a list of blocks gets a text block at its end, after any ``cache_control`` the client
set). Only ``model``, ``messages``, ``system``, ``stream`` and ``metadata.user_id`` (the user
id when no X-Mnemo-User-Id is sent) are read; tools, images, thinking and every other field go
upstream untouched, and the reply comes back as the upstream sent it. Errors on this path are in
Anthropic's shape. Served by ``provider: anthropic`` routes only (see gateway.anthropic).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.anthropic import MESSAGES, MessagesReply, message_text
from gateway.body_checks import check_stream_flag, require_messages, require_model
from gateway.errors import GatewayError, anthropic_response, bad_request
from gateway.injection import append_block
from gateway.memory_loop import serve
from gateway.services import Services
from gateway.streaming import StreamReply
from gateway.upstream import Route, Upstream


def validate_messages_body(body: dict[str, Any]) -> None:
    require_model(body)
    require_messages(body, content_required=True)
    if body.get("system") is not None and not isinstance(body["system"], str | list):
        raise bad_request("`system` must be a string or an array of text blocks", param="system")
    check_stream_flag(body)


class AnthropicMessages:
    api = "messages"
    user_field = "metadata.user_id"

    def validate(self, body: dict[str, Any]) -> None:
        validate_messages_body(body)

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        # Anthropic's messages read like chat messages (text blocks are {"type": "text"} parts).
        system = body.get("system")
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *body["messages"]]

    def inject(self, body: dict[str, Any], block: str) -> dict[str, Any]:
        return {**body, "system": append_block(body.get("system"), block)}

    def upstream(self, services: Services, route: Route) -> Upstream:
        if route.provider != "anthropic":
            raise bad_request(
                f"model `{route.public_name}` is served by provider `{route.provider}`, which does not speak "
                "Anthropic's Messages API: /v1/messages needs a model route with provider anthropic",
                param="model",
                code="unsupported_provider",
            )
        return services.openai_upstream.at(MESSAGES)

    def reply_text(self, content: bytes) -> str | None:
        return message_text(content)

    def stream_reply(self) -> StreamReply:
        return MessagesReply()

    def error_response(self, error: GatewayError) -> Response:
        return anthropic_response(error)


MESSAGES_API = AnthropicMessages()


async def messages(request: Request) -> Response:
    return await serve(request, MESSAGES_API)
