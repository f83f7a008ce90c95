"""The HTTP/1.1 protocol ``mnemo up`` and ``mnemo serve`` run: uvicorn's httptools protocol (the
one uvicorn itself picks, httptools coming with uvicorn[standard]) with the limits uvicorn lacks.

- Headers: a request's line and headers must arrive within ``header_timeout_s`` of the connection
  (or of the first byte of the next request on a kept-alive one) and within ``MAX_HEADER_BYTES``;
  else 408 / 431 and the connection is closed (a connection that sent nothing is closed without
  an answer, which a client sending its request at that moment could take for the request's).
  uvicorn alone waits for ever, and keeps every byte.
- Body: it may not stall for ``body_timeout_s``, nor arrive slower than ``body_min_bytes_per_s``
  on average beyond that allowance (a byte a second never stalls); else 408 when nothing was
  answered yet, and closed. Time the app is not reading (uvicorn then stops reading the socket)
  is not the client's fault and does not count. Kept here, not in the handlers, so a body no
  handler reads (a 404, a 401) is bounded too.
- Connections: past ``max_connections`` a new one is answered 503 server_busy once its headers
  arrive (read first: closing on unread data would reset the connection and lose the answer).

A response that takes long (a long generation, streamed) is never cut: no timer runs between a
request's last byte and the end of its response.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, cast

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import GatewayError, error_response
from mnemo.config import ServerSettings

# The request line and headers together; browsers and SDKs send a few KB (nginx's default cap is 32 KB).
MAX_HEADER_BYTES = 64 * 1024
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    body_min_bytes_per_s: int
    max_connections: int

    @classmethod
    def of(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(server.header_timeout_s, server.body_timeout_s, server.body_min_bytes_per_s, server.max_connections)


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn.Config(http=...), which instantiates it itself."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A whole response, written by the protocol itself when no request is being served."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps(GatewayError(status, message, type=kind, code=code).body()).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def refuse_connection(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The app of a connection past max_connections: 503 server_busy, then closed."""
    error = GatewayError(
        503, "the gateway has too many open connections; retry shortly", type="server_error", code="server_busy"
    )
    path = str(scope.get("path", ""))
    response = error_response(path, error, {"retry-after": str(RETRY_AFTER_S), "connection": "close"})
    await response(cast(Any, scope), cast(Any, receive), cast(Any, send))


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._request_begun = False  # a byte of the awaited request has arrived
        self._header_bytes = 0
        self._oversized = False
        self._body_start = 0.0
        self._body_last = 0.0
        self._body_bytes = 0

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        refused = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if refused:
            self.app = cast(ASGI3Application, refuse_connection)
        self._arm(self.limits.header_timeout_s, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes between requests on a kept-alive connection (uvicorn's keep-alive timer stops at
        # the first of them) start the next request's header deadline.
        if self._awaiting_headers:
            self._request_begun = True
            if self._timer is None:
                self._arm(self.limits.header_timeout_s, self._headers_timed_out)
        super().data_received(data)
        if self._oversized:
            message = f"the request line and headers exceed {MAX_HEADER_BYTES} bytes"
            self._close(error_bytes(431, message, "headers_too_large") if self._idle() else None)

    # Headers

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._request_begun = True
        if self._timer is None:
            self._arm(self.limits.header_timeout_s, self._headers_timed_out)
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        if not self._oversized:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        if not self._oversized:
            super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        self._oversized = self._oversized or self._header_bytes > MAX_HEADER_BYTES

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._oversized:
            return  # answered 431 once the parser returns
        self._awaiting_headers = False
        super().on_headers_complete()
        now = self.loop.time()
        self._body_start = self._body_last = now
        self._body_bytes = 0
        self._arm(self.limits.body_timeout_s, self._body_timed_out)

    def _headers_timed_out(self) -> None:
        self._timer = None
        # While an earlier request is still answered (its client pipelined a next one), an answer
        # here would be read as that request's: the connection is only closed.
        answer = error_bytes(408, "the request headers did not arrive in time", "request_timeout")
        self._close(answer if self._idle() and self._request_begun else None)

    # Body

    def on_body(self, body: bytes) -> None:
        if self._oversized:
            return
        self._body_bytes += len(body)
        self._body_last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._oversized:
            return
        self._disarm()
        self._awaiting_headers = True
        self._request_begun = False
        super().on_message_complete()

    def _body_deadline(self) -> float:
        limits = self.limits
        deadline = self._body_last + limits.body_timeout_s
        if limits.body_min_bytes_per_s:
            allowance = self._body_start + limits.body_timeout_s + self._body_bytes / limits.body_min_bytes_per_s
            deadline = min(deadline, allowance)
        return deadline

    def _body_timed_out(self) -> None:
        # One timer per stall allowance rather than one per chunk: on firing it re-arms at the
        # deadline the bytes since have earned, if that is still ahead.
        self._timer = None
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not taking the body: the client is not late
            self._body_start = self._body_last = now
            self._body_bytes = 0
        deadline = self._body_deadline()
        if deadline > now:
            self._timer = self.loop.call_at(deadline, self._body_timed_out)
            return
        unanswered = self.cycle is not None and not self.cycle.response_started
        answer = error_bytes(408, "the request body did not arrive in time", "request_timeout")
        self._close(answer if unanswered else None)

    # Timers and answers

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _close(self, answer: bytes | None) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # At once, not when the loop reports the close: the app's receive() now says
            # http.disconnect and its send() writes nothing after the answer.
            cycle.disconnected = True
            cycle.message_event.set()
