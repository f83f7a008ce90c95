"""Anthropic's Messages API on the wire: where a route's requests go, the headers they carry, and
how a reply (JSON or SSE events) reads.

A route with ``provider: anthropic`` posts to its ``base_url`` + ``/v1/messages``: the base URL
is the host root, as Anthropic's SDKs and litellm take it (``https://api.anthropic.com``, the
default when the route names none), so one route serves both /v1/messages (relayed here) and
/v1/chat/completions (through litellm).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import GatewayError, anthropic_error_body
from gateway.streaming import SSEEvents
from gateway.upstream import Endpoint, Route
from mnemo.messages import content_text

ANTHROPIC_API = "https://api.anthropic.com"
# The version every Anthropic SDK sends; a bare HTTP client that sends none still gets answered.
DEFAULT_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "user-agent", "x-stainless-retry-count")


def anthropic_headers(route: Route, client_headers: Mapping[str, str]) -> dict[str, str]:
    """The configured key as ``x-api-key``, else the client's own credential (its ``x-api-key``,
    or the ``Authorization`` bearer of an OAuth token), sent only to the configured base_url."""
    headers = {"content-type": "application/json", "accept-encoding": "identity", "anthropic-version": DEFAULT_VERSION}
    for name in FORWARDED_HEADERS:
        if name in client_headers:
            headers[name] = client_headers[name]
    if route.api_key:
        headers["x-api-key"] = route.api_key
    elif "x-api-key" in client_headers:
        headers["x-api-key"] = client_headers["x-api-key"]
    elif "authorization" in client_headers:
        headers["authorization"] = client_headers["authorization"]
    return headers


MESSAGES = Endpoint("/v1/messages", anthropic_headers, default_base_url=ANTHROPIC_API)


def message_text(content: bytes) -> str | None:
    """The text blocks of a Message, or None when the body is not one."""
    try:
        message = json.loads(content)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    return content_text(message.get("content"))


class MessagesReply(SSEEvents):
    """Anthropic's stream: text deltas by content block, finished by ``message_stop``. Tool use,
    thinking and ``error`` events are relayed as they came; only text is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, list[str]] = {}
        self.stopped = False

    @property
    def text(self) -> str:
        # Blocks joined as the non-streaming content_text joins them.
        return "\n".join("".join(self._blocks[index]) for index in sorted(self._blocks))

    @property
    def complete(self) -> bool:
        return self.stopped

    def event(self, event: dict[str, Any]) -> None:
        kind, index = event.get("type"), event.get("index")
        if kind == "message_stop":
            self.stopped = True
        elif kind == "content_block_start" and isinstance(index, int):
            block = event.get("content_block")
            if isinstance(block, dict) and block.get("type") == "text":
                self._blocks[index] = [block.get("text") or ""]
        elif kind == "content_block_delta" and index in self._blocks:
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self._blocks[index].append(delta["text"])

    def error_event(self, error: GatewayError) -> bytes:
        return b"event: error\ndata: " + json.dumps(anthropic_error_body(error)).encode() + b"\n\n"
