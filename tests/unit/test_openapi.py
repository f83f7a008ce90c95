"""The OpenAPI document describes every route of the app, with its methods."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from gateway.app import create_app
from gateway.openapi import build_document
from mnemo.config import Settings


def app_routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= app_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found |= {(prefix + route.path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return found


def test_every_route_of_the_app_is_in_the_openapi_document() -> None:
    paths = build_document()["paths"]
    documented = {(path, method) for path, operations in paths.items() for method in operations}
    routes = app_routes(create_app(Settings()).routes)
    assert routes - documented == set()
    assert documented - routes == set()


def test_every_operation_documents_its_path_parameters_and_error_shape() -> None:
    document = build_document()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert in_path == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
