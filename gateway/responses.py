"""POST /v1/responses: OpenAI's Responses API with memory.

The query is the request's new input: with ``previous_response_id`` the earlier turns live at the
provider and only the new input is searched. The memory block is appended to ``instructions``,
which the API never carries over from a previous response, so each request brings its own. Only
``model``, ``input``, ``instructions`` and ``stream`` are read; ``previous_response_id``,
``store``, ``tools``, ``reasoning`` and every other field go upstream untouched, and the reply
(JSON, or the typed SSE events) comes back as the upstream sent it. Served by OpenAI-compatible
routes (POST base_url + /responses); litellm routes are refused with a 400 naming the provider.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.body_checks import check_stream_flag, require_model
from gateway.errors import GatewayError, bad_request
from gateway.injection import append_block
from gateway.memory_loop import serve
from gateway.services import Services
from gateway.streaming import SSEEvents, StreamReply
from gateway.upstream import RESPONSES, Route, Upstream

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")


def validate_responses_body(body: dict[str, Any]) -> None:
    require_model(body)
    items = body.get("input")
    if items is not None and not isinstance(items, str | list):
        raise bad_request("`input` must be a string or an array of input items", param="input")
    for index, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            raise bad_request(f"input[{index}] must be an object", param=f"input[{index}]")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise bad_request("`instructions` must be a string", param="instructions")
    check_stream_flag(body)


def item_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") in TEXT_PARTS]
    return "\n".join(text for text in texts if isinstance(text, str))


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Instructions and the input's message items as chat-style messages; function calls, their
    outputs, reasoning and item references carry nothing to search or remember."""
    instructions = body.get("instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items or []:
        if item.get("type", "message") == "message" and item.get("role") in MESSAGE_ROLES:
            messages.append({"role": item["role"], "content": item_text(item.get("content"))})
    return messages


def output_text(response: Any) -> str | None:
    """The text of a Response's message items (the SDKs' ``output_text``); None when not a Response."""
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        return None
    texts = []
    for item in response["output"]:
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list):
            texts += [p.get("text") for p in item["content"] if isinstance(p, dict) and p.get("type") == "output_text"]
    return "".join(text for text in texts if isinstance(text, str))


def completed_text(content: bytes) -> str | None:
    """The reply of a completed Response; None for anything else (an ``incomplete`` or a
    ``background`` response that is still ``queued`` has no finished reply to remember)."""
    try:
        response = json.loads(content)
    except ValueError:
        return None
    if not isinstance(response, dict) or response.get("status") != "completed":
        return None
    return output_text(response)


class ResponsesReply(SSEEvents):
    """The typed events of a Responses stream: text deltas, finished by ``response.completed``
    (whose response carries the whole output). ``response.failed``, ``response.incomplete`` and
    ``error`` are relayed as they came and record nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._deltas: list[str] = []
        self._final: str | None = None
        self._sequence = -1

    @property
    def text(self) -> str:
        return self._final or "".join(self._deltas)

    @property
    def complete(self) -> bool:
        return self._final is not None

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if isinstance(event.get("sequence_number"), int):
            self._sequence = event["sequence_number"]
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._deltas.append(event["delta"])
        elif kind == "response.completed":
            self._final = output_text(event.get("response")) or ""

    def error_event(self, error: GatewayError) -> bytes:
        # The nested shape: the openai SDKs raise on it, as they do on a Chat Completions error.
        data = {"type": "error", "error": error.body()["error"], "sequence_number": self._sequence + 1}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


class Responses:
    api = "responses"
    user_field = "user"

    def validate(self, body: dict[str, Any]) -> None:
        validate_responses_body(body)

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return input_messages(body)

    def inject(self, body: dict[str, Any], block: str) -> dict[str, Any]:
        return {**body, "instructions": append_block(body.get("instructions"), block)}

    def upstream(self, services: Services, route: Route) -> Upstream:
        if not route.openai_compatible:
            raise bad_request(
                f"model `{route.public_name}` is served by provider `{route.provider}`, which Mnemo cannot "
                "relay the Responses API to: use /v1/chat/completions, or a route with provider openai",
                param="model",
                code="unsupported_provider",
            )
        return services.openai_upstream.at(RESPONSES)

    def reply_text(self, content: bytes) -> str | None:
        return completed_text(content)

    def stream_reply(self) -> StreamReply:
        return ResponsesReply()

    def error_response(self, error: GatewayError) -> Response:
        return error.response()


RESPONSES_API = Responses()


async def responses(request: Request) -> Response:
    return await serve(request, RESPONSES_API)
