"""Relaying an upstream SSE stream unchanged while reading the reply out of it.

The relay owns the stream's whole lifetime in one ``finally``: it closes the upstream
response (also when the client goes away) and, only if the upstream finished the reply
and the client received it, hands the full reply to ``on_complete``. A cut, failed or
abandoned stream records nothing.

What "the reply" and "finished" mean depends on the API: :class:`SSEReply` reads Chat
Completions chunks; the Responses and Anthropic Messages parsers (gateway.responses,
gateway.anthropic) are :class:`SSEEvents` too, and each writes its own API's error event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import anyio

from gateway.errors import GatewayError
from gateway.upstream import UpstreamStream

logger = logging.getLogger(__name__)

DONE_MARKER = "[DONE]"


class MalformedStream(GatewayError):
    def __init__(self, detail: str) -> None:
        super().__init__(502, f"upstream sent a malformed stream: {detail}", type="upstream_error", code="bad_stream")


class StreamReply(Protocol):
    """What the relay needs of an API's stream: the reply read so far, whether the upstream
    finished it, and how that API spells an error event."""

    @property
    def text(self) -> str: ...

    @property
    def complete(self) -> bool: ...

    def feed(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...

    def error_event(self, error: GatewayError) -> bytes: ...


class SSEEvents:
    """Incremental SSE parsing: each ``data:`` line's JSON object goes to :meth:`event`."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def close(self) -> None:
        """The stream ended: a last line without a trailing newline still counts."""
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            self._line(rest.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # comments, event:, id:, retry: and blank separators carry no reply text
        data = line[5:].strip()
        if data == DONE_MARKER.encode():
            self.done_marker()
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise MalformedStream("a data line is not JSON") from None
        if not isinstance(event, dict):
            raise MalformedStream("a data line is not a JSON object")
        self.event(event)

    def done_marker(self) -> None:
        """Only Chat Completions ends with ``[DONE]``; a server that adds it elsewhere is not wrong."""

    def event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError


class SSEReply(SSEEvents):
    """Chat Completions chunks: accumulates the assistant's text (choice 0)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self.done = False
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def complete(self) -> bool:
        return self.done or self.finish_reason is not None

    def done_marker(self) -> None:
        self.done = True

    def event(self, event: dict[str, Any]) -> None:
        if "error" in event:
            raise MalformedStream("upstream reported an error mid-stream")
        self._choice(event.get("choices"))

    def error_event(self, error: GatewayError) -> bytes:
        return error_event(error)

    def _choice(self, choices: Any) -> None:
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self._parts.append(delta["content"])
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]


def error_event(error: GatewayError) -> bytes:
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"


class StreamRelay:
    def __init__(
        self,
        upstream: UpstreamStream,
        on_complete: Callable[[str], Awaitable[None]],
        reply: StreamReply | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._upstream = upstream
        self._on_complete = on_complete
        self._on_end = on_end  # called last, whether the reply was recorded or not
        self.reply: StreamReply = SSEReply() if reply is None else reply
        self.delivered = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._upstream:
                self.reply.feed(chunk)
                yield chunk
            self.reply.close()
            if self.reply.complete:
                self.delivered = True
            else:
                logger.warning("upstream stream ended before the reply finished; not recording it")
        except GatewayError as exc:
            logger.warning("upstream stream failed mid-way: %s", exc.message)
            yield self.reply.error_event(exc)
        finally:
            # Starlette cancels this generator when the client disconnects; shield the clean-up.
            with anyio.CancelScope(shield=True):
                try:
                    await self._upstream.aclose()
                    if self.delivered:
                        await self._on_complete(self.reply.text)
                finally:
                    if self._on_end is not None:
                        self._on_end()
