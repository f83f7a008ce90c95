"""The pass-through's decisions, one at a time: which paths it relays and which stay Mnemo's, how
a path becomes an upstream URL (never another host), where a JSON body's model is found, which
headers cross, and which model entry serves a request."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.routing import Match

from gateway.access import carries_upstream_key
from gateway.api_paths import is_memory_path
from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.passthrough import (
    PassthroughRoute,
    pick_route,
    relayed_request_headers,
    relayed_response_headers,
    top_level_model,
    upstream_subpath,
    upstream_url,
)
from gateway.upstream import ModelTable, Route
from mnemo.config import Settings, load_settings
from mnemo.errors import ConfigError

KEYED = Route("*", "openai", "*", "https://api.example.com/v1", "sk-configured")
KEYLESS = Route("*", "openai", "*", "https://api.example.com/v1", None)


def scope(path: str, method: str = "GET", raw_path: bytes | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "raw_path": raw_path or path.encode(), "root_path": ""}


def passthrough_route(settings: Settings) -> PassthroughRoute:
    routes = [route for route in create_app(settings).routes if isinstance(route, PassthroughRoute)]
    assert len(routes) == 1
    return routes[0]


@pytest.mark.parametrize(
    ("path", "method", "relayed"),
    [
        ("/v1/embeddings", "POST", True),
        ("/v1/files/file-abc/content", "GET", True),
        ("/v1/models/gpt-4o", "GET", True),
        ("/v1/chat/completions/chatcmpl-1", "GET", True),
        ("/v1/chat/completions", "GET", False),  # Mnemo's path: its 405, not the upstream's
        ("/v1/models", "DELETE", False),
        ("/v1/memories", "PUT", False),
        ("/v1/memories/a/b/c", "GET", False),  # the memory API's whole subtree
        ("/v1/users", "GET", False),
        ("/v1/requests/x", "POST", False),
        ("/v1/eventsource", "GET", True),  # a prefix of a word is not the resource
        ("/mem0/v1/ping/", "GET", False),
        ("/healthz", "POST", False),
    ],
)
def test_the_catch_all_takes_only_what_mnemo_does_not_serve(path: str, method: str, relayed: bool) -> None:
    match, _ = passthrough_route(Settings()).matches(scope(path, method))
    assert (match is Match.FULL) is relayed


def test_a_moved_memory_api_frees_its_old_paths_and_the_setting_can_turn_the_relay_off() -> None:
    route = passthrough_route(Settings.model_validate({"server": {"memory_api_prefix": "/mnemo/v1"}}))
    assert route.matches(scope("/v1/memories", "POST"))[0] is Match.FULL
    assert route.matches(scope("/v1/users/alice", "DELETE"))[0] is Match.FULL
    app = create_app(Settings.model_validate({"server": {"passthrough": False}}))
    assert not [r for r in app.routes if isinstance(r, PassthroughRoute)]


def test_authorization_is_the_upstream_key_everywhere_but_the_memory_api() -> None:
    for path in ("/v1/chat/completions", "/v1/models", "/v1/embeddings", "/v1/files/x", "/v1/memoriesx"):
        assert carries_upstream_key(path), path
    for path in ("/v1/memories", "/v1/memories/search", "/v1/users/a/export", "/v1/events", "/mem0/v1/ping/"):
        assert not carries_upstream_key(path), path
    assert carries_upstream_key("/v1/memories", "/mnemo/v1")
    assert not carries_upstream_key("/mnemo/v1/memories", "/mnemo/v1")
    assert is_memory_path("/mnemo/v1/requests/r1", "/mnemo/v1") and not is_memory_path("/v1/requests/r1", "/mnemo/v1")


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/../x",
        b"/v1/files/../../x",
        b"/v1/./files",
        b"/v1/%2e%2e/x",
        b"/v1/files/%2E%2e",
        b"/v1/files%2F..%2Fx",
        b"/v1/files/a%2fb",
        b"/v1/files/..%5Cx",
        b"/v1/files/a\\b",
        b"/v1//evil.example/x",
        b"/v1/files//",
        b"/v1/",
        b"/v1/files/%00",
        b"/v1/files/%zz",
        b"/v1/files/a b",
        b"/v1%2Fembeddings",
        b"http://evil.example/v1/x",
    ],
)
def test_paths_that_could_leave_the_base_url_are_a_400(raw: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        upstream_subpath(scope("/v1/x", raw_path=raw))
    assert caught.value.status == 400 and caught.value.code == "invalid_path"


def test_a_path_is_relayed_as_the_client_encoded_it_below_the_configured_base_url() -> None:
    path = upstream_subpath(scope("/v1/files/file abc/content", raw_path=b"/v1/files/file%20abc/content"))
    assert path == b"/files/file%20abc/content"
    assert upstream_subpath(scope("/v1/files/", raw_path=b"/v1/files/")) == b"/files/"
    url = upstream_url(KEYED, path, b"purpose=batch&after=a%2Fb")
    assert str(url) == "https://api.example.com/v1/files/file%20abc/content?purpose=batch&after=a%2Fb"
    for base_url in ("https://api.example.com/v1/", "https://api.example.com/openai/v1?api-version=1"):
        route = Route("*", "openai", "*", base_url, None)
        assert upstream_url(route, b"/embeddings", b"").host == "api.example.com"
    assert upstream_url(KEYED, b"/@evil.example/x", b"").host == "api.example.com"
    assert str(upstream_url(KEYED, b"/:evil.example:81/x", b"")).startswith("https://api.example.com/v1/")


def test_the_model_is_read_from_a_json_body_or_from_as_much_of_it_as_was_read() -> None:
    body = json.dumps({"input": ["a", {"model": "nested"}], "model": "text-embedding-3-small", "n": 1}).encode()
    assert top_level_model(body) == "text-embedding-3-small"
    assert top_level_model(body[: body.index(b"1}")]) == "text-embedding-3-small"  # cut after the model
    assert top_level_model(body[:20]) is None  # cut before it: the default route
    assert top_level_model(b' \n{ "model" : "m1" , "model": "m2" }') == "m2"  # the last wins, as in json.loads
    assert top_level_model(b'{"input": "x", "model": 5}') is None
    assert top_level_model(b'{"input": {"model": "nested"}}') is None
    for not_an_object in (b"", b"[]", b'"model"', b"not json", b"\xff\xfe"):
        assert top_level_model(not_an_object) is None
    assert top_level_model('{"input": "café ☕", "model": "m"}'.encode()[:-3]) is None


def test_hop_by_hop_client_and_mnemo_headers_stay_and_the_configured_key_replaces_the_clients() -> None:
    sent = Headers(
        raw=[
            (b"host", b"evil.example"),
            (b"authorization", b"Bearer sk-client"),
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", b"10"),
            (b"connection", b"keep-alive, x-hop"),
            (b"x-hop", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic x"),
            (b"expect", b"100-continue"),
            (b"cookie", b"session=1"),
            (b"x-mnemo-api-key", b"mnemo-key"),
            (b"x-mnemo-user-id", b"alice"),
            (b"x-forwarded-host", b"evil.example"),
            (b"forwarded", b"host=evil.example"),
            (b"openai-organization", b"org-1"),
            (b"accept-encoding", b"gzip"),
            (b"api-key", b"azure-client-key"),
        ]
    )
    relayed = relayed_request_headers(KEYED, sent)
    assert relayed == [
        (b"content-type", b"multipart/form-data; boundary=b"),
        (b"content-length", b"10"),
        (b"openai-organization", b"org-1"),
        (b"accept-encoding", b"gzip"),
        (b"authorization", b"Bearer sk-configured"),
    ]
    keyless = relayed_request_headers(KEYLESS, sent)
    assert (b"authorization", b"Bearer sk-client") in keyless and (b"api-key", b"azure-client-key") in keyless
    assert not [name for name, _ in relayed_request_headers(KEYLESS, Headers({"a": "b"})) if name == b"authorization"]


def test_response_hop_by_hop_headers_and_cookies_are_dropped_and_the_rest_kept_in_order() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"Server", b"upstream"),
        (b"Vary", b"Accept"),
        (b"Vary", b"Origin"),
        (b"x-request-id", b"req_1"),
    ]
    assert relayed_response_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"vary", b"Accept"),
        (b"vary", b"Origin"),
        (b"x-request-id", b"req_1"),
    ]


def services(models: list[dict[str, Any]], **server: Any) -> Any:
    settings = Settings.model_validate({"models": models, "server": server})
    return SimpleNamespace(settings=settings, models=ModelTable(settings.models, environ={}))


def test_the_route_is_the_named_model_else_passthrough_model_else_star_and_must_be_openai_compatible() -> None:
    table = [
        {"name": "a", "base_url": "http://a/v1"},
        {"name": "claude", "provider": "anthropic", "model": "claude-x"},
        {"name": "*", "base_url": "http://star/v1"},
    ]
    assert pick_route(services(table), "a", "/v1/embeddings").base_url == "http://a/v1"
    assert pick_route(services(table), "unlisted", "/v1/embeddings").base_url == "http://star/v1"
    assert pick_route(services(table), None, "/v1/files").base_url == "http://star/v1"
    assert pick_route(services(table, passthrough_model="a"), None, "/v1/files").base_url == "http://a/v1"
    with pytest.raises(GatewayError) as named:
        pick_route(services(table), "claude", "/v1/embeddings")
    assert (named.value.status, named.value.param) == (400, "model")
    with pytest.raises(GatewayError) as default:
        pick_route(services(table, passthrough_model="claude"), None, "/v1/files")
    assert default.value.status == 404
    with pytest.raises(GatewayError) as none:
        pick_route(services(table[:2]), None, "/v1/files")
    assert none.value.status == 404
    with pytest.raises(GatewayError) as unknown:
        pick_route(services(table[:2]), "unlisted", "/v1/embeddings")
    assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")


def test_passthrough_settings_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="passthrough_model"):
        load_settings(environ={"MNEMO_SERVER__PASSTHROUGH_MODEL": "nope"})
    for prefix in ("v1", "/v1/", "/../v1", "/v1/../x", "/a b"):
        with pytest.raises(ConfigError, match="memory_api_prefix"):
            load_settings(environ={"MNEMO_SERVER__MEMORY_API_PREFIX": prefix})
    assert (
        load_settings(environ={"MNEMO_SERVER__MEMORY_API_PREFIX": "/mnemo/v1"}).server.memory_api_prefix == "/mnemo/v1"
    )
