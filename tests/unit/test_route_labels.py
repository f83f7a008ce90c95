"""The request counter's route label, through the real metrics middleware on a small app with
mounts nested three deep, a catch-all route, a mounted plain ASGI app and a key check that
answers before routing: every request is labelled by its full route template, or ``unmatched``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.metrics import Metrics
from gateway.request_metrics import RequestMetrics


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def plain_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("static")(scope, receive, send)


class DenyOnHeader:
    """Answers 401 before routing when asked to, as the gateway's key check does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-deny", b"1") in scope["headers"]:
            await PlainTextResponse("no", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


ROUTES = [
    Route("/v1/models", ok, methods=["GET"]),
    Route("/v1/memories/{memory_id}", ok, methods=["GET"]),
    Route("/v1/{path:path}", ok, methods=["GET", "POST"]),  # a catch-all pass-through, as added later
    Mount(
        "/mem0",
        routes=[
            Route("/v1/memories/{memory_id}/", ok, methods=["GET"]),
            Mount("/deep", routes=[Mount("/{tenant}", routes=[Route("/items/{item_id}", ok, methods=["GET"])])]),
        ],
    ),
    Mount("/static", app=plain_asgi),
]


@pytest.fixture
def app() -> Iterator[tuple[TestClient, Metrics]]:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"services": SimpleNamespace(metrics=metrics)}

    middleware = [Middleware(RequestMetrics), Middleware(DenyOnHeader)]
    starlette = Starlette(routes=ROUTES, middleware=middleware, lifespan=lifespan)
    with TestClient(starlette, follow_redirects=False) as client:
        yield client, metrics


# (method, path, status it gets, route label it must get)
REQUESTS = [
    ("GET", "/v1/models", 200, "/v1/models"),
    ("GET", "/v1/memories/m1", 200, "/v1/memories/{memory_id}"),
    ("POST", "/v1/embeddings", 200, "/v1/{path:path}"),
    ("GET", "/mem0/v1/memories/m1/", 200, "/mem0/v1/memories/{memory_id}/"),
    ("DELETE", "/mem0/v1/memories/m1/", 405, "/mem0/v1/memories/{memory_id}/"),
    ("GET", "/mem0/deep/acme/items/7", 200, "/mem0/deep/{tenant}/items/{item_id}"),
    ("GET", "/static/site.css", 200, "/static"),
    ("GET", "/mem0/no/such/route/", 404, "unmatched"),
    ("GET", "/mem0/deep/acme/nothing", 404, "unmatched"),
    ("GET", "/mem0/v1/memories/m1", 307, "unmatched"),  # the router's slash redirect: no route ran
    ("GET", "/nowhere", 404, "unmatched"),
]
# Refused by the key check before routing: labelled by the route they would have reached.
REFUSED = [
    ("GET", "/mem0/deep/acme/items/7", 401, "/mem0/deep/{tenant}/items/{item_id}"),
    ("DELETE", "/v1/memories/m1", 401, "/v1/memories/{memory_id}"),  # would be its 405: the first partial match
    ("GET", "/mem0/no/such/route/", 401, "unmatched"),
    ("PUT", "/nowhere", 401, "unmatched"),
]
Labels = dict[tuple[str, str, str], float]


def counted(metrics: Metrics) -> Labels:
    """Every (method, route, status) the request counter holds, with its count."""
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in metrics.registry.collect()
        if family.name == "mnemo_requests"
        for sample in family.samples
        if sample.name == "mnemo_requests_total"
    }


def expected(requests: list[tuple[str, str, int, str]], times: int) -> Labels:
    labels: Labels = {}
    for method, _, status, route in requests:
        key = (method, route, str(status))
        labels[key] = labels.get(key, 0.0) + times
    return labels


def test_every_request_is_labelled_by_its_full_route_template_or_unmatched(app: tuple[TestClient, Metrics]) -> None:
    client, metrics = app
    for _ in range(2):  # the second round is labelled from the tree walked on the first
        for method, path, status, _ in REQUESTS:
            assert client.request(method, path).status_code == status, (method, path)
    assert counted(metrics) == expected(REQUESTS, times=2)


def test_a_request_refused_before_routing_is_labelled_by_the_route_it_asked_for(
    app: tuple[TestClient, Metrics],
) -> None:
    client, metrics = app
    for method, path, status, _ in REFUSED:
        assert client.request(method, path, headers={"x-deny": "1"}).status_code == status, (method, path)
    assert counted(metrics) == expected(REFUSED, times=1)
