"""Every other OpenAI endpoint (embeddings, moderations, files, audio, images, batches, ...): the
request relayed to the upstream unchanged, both bodies streamed, no memory involved.

Where it goes comes from configuration only. The model entry is the one a JSON body's top-level
``model`` names (looked for in a bounded prefix of the body), else ``server.passthrough_model`` or
``*``; the URL is that entry's base_url plus the path below /v1, as the client encoded it but
checked segment by segment (no dot segments, no encoded slashes, no empty segments). Host,
X-Forwarded-* and an absolute-form target are never read. Credentials as for chat
(:func:`gateway.upstream.outgoing_headers`): the entry's key replaces the client's Authorization,
else the client's own goes to that base_url only.

Mnemo's own routes keep priority: :class:`PassthroughRoute` comes last and declines every path a
route of Mnemo's serves (for any method, so a wrong method stays Mnemo's 405) and every path of the
memory API (:mod:`gateway.api_paths`), whose Authorization may be a Mnemo key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from urllib.parse import unquote_to_bytes

import anyio
import httpx
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from gateway.api_paths import is_memory_path
from gateway.body import too_large
from gateway.errors import GatewayError, bad_request, map_upstream_errors
from gateway.services import Services
from gateway.upstream import Route as ModelRoute
from mnemo.config import ServerSettings

logger = logging.getLogger(__name__)

PREFIX = b"/v1"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers about this hop or this client, not about the request. Authorization is set
# apart (the configured key or the client's own); Expect is answered by Mnemo's own server.
REQUEST_DROPPED = HOP_BY_HOP | {"host", "cookie", "authorization", "expect", "forwarded", "x-real-ip"}
REQUEST_DROPPED_PREFIXES = ("x-mnemo-", "x-forwarded-")
# Other ways a client sends its own key (Azure's, Anthropic's): gone too when the entry has a key.
CLIENT_KEY_HEADERS = frozenset({"api-key", "x-api-key"})
# Mnemo's server sends its own Date and Server; an upstream's session cookie is never handed to clients.
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "set-cookie2", "date", "server"}
# One path segment as RFC 3986 allows it (unreserved, sub-delims, ':' '@', %XX escapes).
SEGMENT = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")
JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


class PassthroughRoute(Route):
    """``/v1/{path}``, any method, for what none of ``reserved`` (Mnemo's own routes) serves."""

    def __init__(self, reserved: Sequence[BaseRoute], memory_prefix: str) -> None:
        super().__init__("/v1/{path:path}", passthrough)
        self.methods = None  # every method (Starlette gives a function endpoint GET only)
        self._reserved = list(reserved)
        self._memory_prefix = memory_prefix

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.NONE:
            return match, child_scope
        if is_memory_path(route_path(scope), self._memory_prefix):
            return Match.NONE, {}
        if any(route.matches(scope)[0] is not Match.NONE for route in self._reserved):
            return Match.NONE, {}
        return match, child_scope


def route_path(scope: Scope) -> str:
    """The path the router matches: without the root path the app is mounted under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def passthrough_routes(server: ServerSettings, reserved: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The catch-all, to go after every other route (``reserved``), when ``server.passthrough`` is on."""
    return [PassthroughRoute(reserved, server.memory_api_prefix)] if server.passthrough else []


async def passthrough(request: Request) -> Response:
    services: Services = request.state.services
    server = services.settings.server
    path = upstream_subpath(request.scope)
    declared = declared_length(request.headers)
    if declared is not None and declared > server.max_passthrough_bytes:
        raise too_large(server.max_passthrough_bytes)
    body = None
    model = None
    if declared is not None or "transfer-encoding" in request.headers:
        body = RelayedBody(request, server.max_passthrough_bytes)
        if is_json(request.headers.get("content-type")):
            model = top_level_model(await body.head(min(server.max_body_bytes, server.max_passthrough_bytes)))
    route = pick_route(services, model, (PREFIX + path).decode())
    outgoing = httpx.Request(
        request.method,
        upstream_url(route, path, request.scope.get("query_string", b"")),
        headers=relayed_request_headers(route, request.headers),
        content=body,
        extensions={"timeout": services.http.timeout.as_dict()},
    )
    async with map_upstream_errors():
        response = await services.http.send(outgoing, stream=True)
    relayed = StreamingResponse(relay_body(response), status_code=response.status_code)
    relayed.raw_headers = relayed_response_headers(response.headers.raw)
    return relayed


def invalid_path(reason: str) -> GatewayError:
    return GatewayError(400, f"the request path {reason}; it cannot be relayed to the upstream", code="invalid_path")


def upstream_subpath(scope: Scope) -> bytes:
    """The path below /v1 as the client encoded it (``/files/file-abc/content``), or a 400."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    if not raw.startswith(PREFIX + b"/"):
        raise invalid_path("does not start with /v1/ before percent-decoding")
    path = raw[len(PREFIX) :]
    segments = path[1:].split(b"/")
    if len(segments) > 1 and not segments[-1]:
        segments.pop()  # a trailing slash is part of some APIs' paths; empty segments elsewhere are not
    for segment in segments:
        if not SEGMENT.fullmatch(segment):
            raise invalid_path("has an empty segment or a character outside RFC 3986")
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b".."):
            raise invalid_path("has a '.' or '..' segment")
        if b"/" in decoded or b"\\" in decoded or any(byte < 0x20 or byte == 0x7F for byte in decoded):
            raise invalid_path("has an encoded slash, backslash or control character")
    return path


def upstream_url(route: ModelRoute, path: bytes, query: bytes) -> httpx.URL:
    if not route.base_url:
        raise GatewayError(500, f"model {route.public_name} has no base_url configured", type="server_error")
    base = httpx.URL(route.base_url)
    raw_path = base.raw_path.partition(b"?")[0].rstrip(b"/") + path
    try:
        # The scheme, host and port are the base_url's: only the path and query are replaced.
        url = base.copy_with(raw_path=raw_path + (b"?" + query if query else b""))
    except httpx.InvalidURL:
        raise invalid_path("or query is not a valid URL part") from None
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):  # cannot happen; never relay if it does
        raise invalid_path("would leave the configured upstream")
    return url


def declared_length(headers: Headers) -> int | None:
    declared = headers.get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        raise bad_request("the Content-Length header is not a number")
    return int(declared)


def is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class RelayedBody:
    """The client's body on its way to the upstream, counted against the limit as it streams. The
    first part may be read ahead (:meth:`head`) to find the model; it is relayed first."""

    def __init__(self, request: Request, limit: int) -> None:
        self._chunks = request.stream()
        self._limit = limit
        self._size = 0
        self._head: list[bytes] = []
        self._ended = False

    async def _next(self) -> bytes | None:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._ended = True
            return None
        except ClientDisconnect:
            raise bad_request("the client disconnected while sending the body") from None
        self._size += len(chunk)
        if self._size > self._limit:
            raise too_large(self._limit)  # raised into httpx mid-upload: the upstream request is aborted
        return chunk

    async def head(self, max_bytes: int) -> bytes:
        """The body's first ``max_bytes`` or so (all of it when it is shorter), kept for relaying."""
        held = sum(len(chunk) for chunk in self._head)
        while held < max_bytes and not self._ended:
            chunk = await self._next()
            if chunk:
                self._head.append(chunk)
                held += len(chunk)
        self._head = [b"".join(self._head)]
        return self._head[0]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for held in head:
            if held:
                yield held
        while (chunk := await self._next()) is not None:
            if chunk:
                yield chunk


def top_level_model(head: bytes) -> str | None:
    """The top-level ``"model"`` string of a JSON object, from its complete text or a prefix of it
    (its keys are read one by one until the text ends); None if there is none to be seen."""
    text = head.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    index = skip_whitespace(text, 0)
    if text[index : index + 1] != "{":
        return None
    index += 1
    model = None
    try:
        while True:
            index = skip_whitespace(text, index)
            key, index = decoder.raw_decode(text, index)
            index = skip_whitespace(text, index)
            if not isinstance(key, str) or text[index : index + 1] != ":":
                return model
            index = skip_whitespace(text, index + 1)
            value, index = decoder.raw_decode(text, index)
            if key == "model":
                model = value if isinstance(value, str) else None  # the last one wins, as in json.loads
            index = skip_whitespace(text, index)
            if text[index : index + 1] != ",":
                return model
            index += 1
    except ValueError:  # the prefix ends inside a key or value (or the body is not JSON)
        return model


def skip_whitespace(text: str, index: int) -> int:
    match = JSON_WHITESPACE.match(text, index)
    return match.end() if match else index


def pick_route(services: Services, model: str | None, path: str) -> ModelRoute:
    if model is not None:
        route = services.models.resolve(model)  # 404 model_not_found, as for chat
        if not route.openai_compatible:
            raise GatewayError(
                400,
                f"model `{model}` is served by provider `{route.provider}`, which has no {path}: only model "
                "entries with provider openai (OpenAI-compatible upstreams) serve pass-through endpoints",
                param="model",
                code="unsupported_endpoint",
            )
        return route
    name = services.settings.server.passthrough_model or "*"
    if not any(entry.name == name for entry in services.settings.models):
        raise GatewayError(
            404,
            f"{path} is relayed to the model entry of server.passthrough_model or '*', and there is none",
            code="not_found",
        )
    route = services.models.resolve(name)
    if not route.openai_compatible:
        raise GatewayError(
            404,
            f"{path} is not served: model entry `{name}` uses provider `{route.provider}`, which serves chat only",
            code="not_found",
        )
    return route


def connection_tokens(values: Iterable[str]) -> set[str]:
    """Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def relayed_request_headers(route: ModelRoute, headers: Headers) -> list[tuple[bytes, bytes]]:
    dropped = connection_tokens(headers.getlist("connection"))
    if route.api_key:
        dropped |= CLIENT_KEY_HEADERS
    relayed = []
    for raw_name, value in headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name in REQUEST_DROPPED or name in dropped or name.startswith(REQUEST_DROPPED_PREFIXES):
            continue
        relayed.append((name.encode("latin-1"), value))
    # As outgoing_headers does for chat: the configured key, else the client's own (never logged).
    if route.api_key:
        relayed.append((b"authorization", f"Bearer {route.api_key}".encode("latin-1")))
    elif "authorization" in headers:
        relayed.append((b"authorization", headers["authorization"].encode("latin-1")))
    return relayed


def relayed_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    pairs = [(name.lower(), value) for name, value in raw]
    dropped = connection_tokens(value.decode("latin-1") for name, value in pairs if name == b"connection")
    return [
        (name, value)
        for name, value in pairs
        if (text := name.decode("latin-1")) not in RESPONSE_DROPPED and text not in dropped
    ]


async def relay_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives, still encoded as the upstream sent it."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # The status is sent; raising makes the server drop the connection, so the client sees a
        # cut body rather than a short one that looks complete.
        logger.warning("upstream failed mid-way through a relayed response: %s", type(exc).__name__)
        raise
    finally:
        # Starlette cancels this generator when the client disconnects; shield the clean-up.
        with anyio.CancelScope(shield=True):
            await response.aclose()
