from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from gateway.errors import GatewayError, litellm_error, map_upstream_errors, upstream_status_error
from gateway.upstream import ModelTable, OpenAICompatibleUpstream, Route, outgoing_headers
from mnemo.config import ModelRoute

# --- ModelTable ----------------------------------------------------------------------------


def table(*routes: dict[str, Any], environ: dict[str, str] | None = None) -> ModelTable:
    return ModelTable([ModelRoute.model_validate(route) for route in routes], environ=environ or {})


def test_model_table_routes_an_exact_name_to_its_provider_model() -> None:
    models = table(
        {"name": "fast", "model": "gpt-4o-mini", "base_url": "http://a/v1", "api_key": "sk-a"},
        {"name": "*", "base_url": "http://star/v1"},
    )
    route = models.resolve("fast")
    assert route == Route("fast", "openai", "gpt-4o-mini", "http://a/v1", "sk-a")
    assert route.openai_compatible


def test_model_table_uses_the_public_name_when_a_route_names_no_provider_model() -> None:
    assert table({"name": "gpt-4o", "base_url": "http://a/v1"}).resolve("gpt-4o").provider_model == "gpt-4o"


def test_model_table_wildcard_keeps_the_requested_model_name() -> None:
    models = table({"name": "*", "base_url": "http://star/v1", "model": "ignored-for-wildcard"})
    route = models.resolve("llama-3.1-8b")
    assert route.public_name == "llama-3.1-8b"
    assert route.provider_model == "llama-3.1-8b"
    assert route.base_url == "http://star/v1"


def test_model_table_prefers_an_exact_name_over_the_wildcard() -> None:
    models = table({"name": "*", "base_url": "http://star/v1"}, {"name": "claude", "provider": "anthropic"})
    assert models.resolve("claude").provider == "anthropic"
    assert not models.resolve("claude").openai_compatible
    assert models.resolve("other").base_url == "http://star/v1"


def test_model_table_rejects_an_unknown_model_with_openais_404() -> None:
    with pytest.raises(GatewayError) as caught:
        table({"name": "fast", "base_url": "http://a/v1"}).resolve("gpt-5")
    error = caught.value
    assert (error.status, error.param, error.code, error.type) == (
        404,
        "model",
        "model_not_found",
        "invalid_request_error",
    )
    assert "gpt-5" in error.message


def test_model_table_resolves_api_key_env_from_the_given_environment() -> None:
    models = table(
        {"name": "a", "base_url": "http://a", "api_key_env": "A_KEY"},
        {"name": "b", "base_url": "http://b", "api_key_env": "MISSING_KEY"},
        {"name": "c", "base_url": "http://c", "api_key_env": "EMPTY_KEY"},
        {"name": "d", "base_url": "http://d"},
        environ={"A_KEY": "sk-from-env", "EMPTY_KEY": ""},
    )
    assert models.resolve("a").api_key == "sk-from-env"
    assert models.resolve("b").api_key is None
    assert models.resolve("c").api_key is None
    assert models.resolve("d").api_key is None


def test_model_table_prefers_an_explicit_api_key_over_api_key_env() -> None:
    models = table({"name": "a", "api_key": "sk-inline", "api_key_env": "A_KEY"}, environ={"A_KEY": "sk-env"})
    assert models.resolve("a").api_key == "sk-inline"


def test_model_table_public_models_lists_configured_names_but_hides_the_wildcard() -> None:
    models = table({"name": "*"}, {"name": "fast"}, {"name": "claude", "provider": "anthropic"})
    assert models.public_models() == ["fast", "claude"]


# --- outgoing_headers ----------------------------------------------------------------------

CLIENT_HEADERS = Headers(
    headers={
        "Authorization": "Bearer sk-client",
        "OpenAI-Organization": "org-1",
        "OpenAI-Project": "proj-1",
        "OpenAI-Beta": "assistants=v2",
        "User-Agent": "OpenAI/Python 1.0",
        "X-Stainless-Retry-Count": "0",
        "X-Mnemo-User-Id": "alice",
        "X-Mnemo-Memory": "on",
        "Cookie": "session=secret",
        "Connection": "keep-alive",
        "Content-Length": "123",
        "Host": "gateway.local",
        "Accept-Encoding": "gzip",
    }
)


def route_with_key(api_key: str | None) -> Route:
    return Route("m", "openai", "m", "http://up/v1", api_key)


def test_outgoing_headers_use_the_configured_key_instead_of_the_clients_bearer() -> None:
    headers = outgoing_headers(route_with_key("sk-configured"), CLIENT_HEADERS)
    assert headers["authorization"] == "Bearer sk-configured"


def test_outgoing_headers_pass_the_clients_bearer_through_when_no_key_is_configured() -> None:
    assert outgoing_headers(route_with_key(None), CLIENT_HEADERS)["authorization"] == "Bearer sk-client"


def test_outgoing_headers_send_no_authorization_when_neither_key_nor_bearer_exists() -> None:
    assert "authorization" not in outgoing_headers(route_with_key(None), Headers(headers={"user-agent": "x"}))


def test_outgoing_headers_forward_only_the_allowed_client_headers() -> None:
    headers = outgoing_headers(route_with_key(None), CLIENT_HEADERS)
    assert headers == {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "openai-organization": "org-1",
        "openai-project": "proj-1",
        "openai-beta": "assistants=v2",
        "user-agent": "OpenAI/Python 1.0",
        "x-stainless-retry-count": "0",
        "authorization": "Bearer sk-client",
    }
    assert not any(name.startswith("x-mnemo") or name == "cookie" for name in headers)


# --- OpenAICompatibleUpstream --------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]
ROUTE = Route("public-name", "openai", "provider-model", "http://up.test/v1/", "sk-up")
COMPLETION = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "hi"}}]}


def upstream_with(handler: Handler) -> tuple[OpenAICompatibleUpstream, httpx.AsyncClient]:
    transport = httpx.MockTransport(handler)
    client = httpx.AsyncClient(transport=transport)
    return OpenAICompatibleUpstream(client, transport), client


async def test_complete_forwards_unknown_fields_intact_and_rewrites_only_the_model() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=COMPLETION)

    body = {
        "model": "public-name",
        "messages": [{"role": "user", "content": "héllo"}],
        "temperature": 0.2,
        "some_future_param": {"nested": [1, 2, {"x": None}]},
        "metadata": {"k": "v"},
    }
    upstream, client = upstream_with(handler)
    async with client:
        content = await upstream.complete(ROUTE, body, Headers(headers={"authorization": "Bearer sk-client"}))
    assert json.loads(content) == COMPLETION
    (request,) = seen
    assert str(request.url) == "http://up.test/v1/chat/completions"
    assert request.method == "POST"
    assert json.loads(request.content) == {**body, "model": "provider-model"}
    assert "héllo".encode() in request.content  # sent as UTF-8, not \\u-escaped
    assert request.headers["authorization"] == "Bearer sk-up"
    assert body["model"] == "public-name"


async def test_complete_relays_an_upstream_error_status_and_message() -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    upstream, client = upstream_with(lambda request: httpx.Response(429, json=error))
    async with client:
        with pytest.raises(GatewayError) as caught:
            await upstream.complete(ROUTE, {"messages": []}, {})
    assert (caught.value.status, caught.value.message) == (429, "Rate limit reached")
    assert (caught.value.type, caught.value.code) == ("requests", "rate_limit_exceeded")


async def test_complete_without_a_base_url_is_a_server_error() -> None:
    upstream, client = upstream_with(lambda request: httpx.Response(200))
    async with client:
        with pytest.raises(GatewayError) as caught:
            await upstream.complete(Route("m", "openai", "m", None, None), {}, {})
    assert caught.value.status == 500


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "status", "code"),
    [
        (httpx.ConnectTimeout, 504, "upstream_timeout"),
        (httpx.ReadTimeout, 504, "upstream_timeout"),
        (httpx.PoolTimeout, 504, "upstream_timeout"),
        (httpx.ConnectError, 502, "upstream_unreachable"),
        (httpx.RemoteProtocolError, 502, "upstream_unreachable"),
        (httpx.ReadError, 502, "upstream_unreachable"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_transport_failures_map_to_gateway_errors(
    exc_type: type[httpx.TransportError], status: int, code: str, streaming: bool
) -> None:
    upstream, client = upstream_with(raising(exc_type))
    async with client:
        with pytest.raises(GatewayError) as caught:
            if streaming:
                await upstream.stream(ROUTE, {"stream": True}, {})
            else:
                await upstream.complete(ROUTE, {}, {})
    assert (caught.value.status, caught.value.code, caught.value.type) == (status, code, "upstream_error")


async def test_stream_relays_a_non_200_status_with_the_upstream_message() -> None:
    upstream, client = upstream_with(
        lambda request: httpx.Response(
            400, json={"error": {"message": "bad messages", "type": "invalid_request_error"}}
        )
    )
    async with client:
        with pytest.raises(GatewayError) as caught:
            await upstream.stream(ROUTE, {"stream": True}, {})
    assert (caught.value.status, caught.value.message) == (400, "bad messages")


class ChunkedBody(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


async def test_stream_yields_the_upstream_bytes_and_closes_the_response() -> None:
    body = ChunkedBody([b"data: 1\n\n", b"data: [DONE]\n\n"])
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    upstream, client = upstream_with(handler)
    async with client:
        stream = await upstream.stream(ROUTE, {"stream": True, "stream_options": {"include_usage": True}}, {})
        received = b"".join([piece async for piece in stream])
        await stream.aclose()
    assert received == b"data: 1\n\ndata: [DONE]\n\n"
    assert json.loads(seen[0]) == {"stream": True, "stream_options": {"include_usage": True}, "model": "provider-model"}
    assert body.closed


async def test_stream_maps_a_read_timeout_mid_stream_to_504() -> None:
    body = ChunkedBody([b"data: 1\n\n"], error=httpx.ReadTimeout("slow"))
    upstream, client = upstream_with(lambda request: httpx.Response(200, stream=body))
    async with client:
        stream = await upstream.stream(ROUTE, {}, {})
        received: list[bytes] = []
        with pytest.raises(GatewayError) as caught:
            async for piece in stream:
                received.append(piece)
        await stream.aclose()
    assert received == [b"data: 1\n\n"]
    assert caught.value.status == 504


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"<html>502 Bad Gateway</html>", b"", b"\xff\xfe", b"[1, 2]", b"42", b"null"])
def test_upstream_status_error_with_a_non_openai_body_uses_a_generic_message(content: bytes) -> None:
    error = upstream_status_error(503, content)
    assert (error.status, error.message, error.type, error.code) == (
        503,
        "upstream returned HTTP 503",
        "upstream_error",
        None,
    )


def test_upstream_status_error_accepts_a_plain_string_error() -> None:
    assert upstream_status_error(401, b'{"error": "invalid key"}').message == "invalid key"


def test_upstream_status_error_ignores_a_non_string_code() -> None:
    error = upstream_status_error(400, b'{"error": {"message": "m", "type": "t", "code": 400}}')
    assert (error.message, error.type, error.code) == ("m", "t", None)


@pytest.mark.parametrize("status", [200, 302, 399, 600, 0])
def test_upstream_status_error_outside_4xx_5xx_becomes_502(status: int) -> None:
    assert upstream_status_error(status, b"").status == 502


def litellm_exception(name: str, status_code: Any = None, message: str = "provider said no") -> Exception:
    cls = type(name, (Exception,), {"__module__": "litellm.exceptions"})
    exc: Exception = cls(f"litellm.{name}: {message}")
    if status_code is not None:
        setattr(exc, "status_code", status_code)  # noqa: B010
    setattr(exc, "message", message)  # noqa: B010
    return exc


@pytest.mark.parametrize(
    ("name", "status_code", "expected_status", "expected_code"),
    [
        ("Timeout", 408, 504, "upstream_timeout"),
        ("Timeout", None, 504, "upstream_timeout"),
        ("SomethingElse", 408, 504, "upstream_timeout"),
        ("APIConnectionError", 500, 502, "upstream_unreachable"),
        ("APIError", None, 502, "upstream_unreachable"),
        ("APIError", "500", 502, "upstream_unreachable"),
        ("APIError", 200, 502, "upstream_unreachable"),
        ("RateLimitError", 429, 429, None),
        ("BadRequestError", 400, 400, None),
        ("AuthenticationError", 401, 401, None),
        ("ServiceUnavailableError", 503, 503, None),
    ],
)
def test_litellm_error_maps_provider_failures_onto_gateway_statuses(
    name: str, status_code: Any, expected_status: int, expected_code: str | None
) -> None:
    error = litellm_error(litellm_exception(name, status_code))
    assert (error.status, error.code, error.type) == (expected_status, expected_code, "upstream_error")


def test_litellm_error_relays_the_provider_message() -> None:
    assert litellm_error(litellm_exception("BadRequestError", 400, "context too long")).message == "context too long"


async def test_map_upstream_errors_translates_litellm_exceptions_by_module() -> None:
    with pytest.raises(GatewayError) as caught:
        async with map_upstream_errors():
            raise litellm_exception("RateLimitError", 429)
    assert caught.value.status == 429
    assert type(caught.value.__cause__).__name__ == "RateLimitError"


async def test_map_upstream_errors_lets_other_exceptions_and_gateway_errors_through() -> None:
    with pytest.raises(KeyError):
        async with map_upstream_errors():
            raise KeyError("not an upstream failure")
    original = GatewayError(404, "x")
    with pytest.raises(GatewayError) as caught:
        async with map_upstream_errors():
            raise original
    assert caught.value is original


async def test_map_upstream_errors_maps_other_httpx_errors_to_502() -> None:
    with pytest.raises(GatewayError) as caught:
        async with map_upstream_errors():
            raise httpx.TooManyRedirects("loop")
    assert (caught.value.status, caught.value.message) == (502, "upstream failed: TooManyRedirects")
