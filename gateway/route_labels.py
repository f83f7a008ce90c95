"""A request's route label for metrics: the full template of the route that served it, mount
prefixes included (``/mem0/v1/memories/{memory_id}/``), or ``unmatched``.

Starlette leaves only the innermost matched route in ``scope["route"]``, and a route knows just its
own part of the path: a route inside ``Mount("/mem0")`` says ``/v1/memories/{memory_id}/``, and a
404 inside the mount leaves the Mount itself. So the router's tree is walked once, each route
getting the templates of the mounts above it joined to its own, and a request is labelled by
looking its route up. A request stopped before routing (a 401 from the key check) is matched
against the same tree, without running anything, so it is labelled by the route it asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

UNMATCHED = "unmatched"


def child_routes(route: BaseRoute) -> Sequence[BaseRoute]:
    """The routes inside a Mount or Host (empty for an endpoint, or a mounted plain ASGI app)."""
    routes = getattr(route, "routes", None)
    return routes if isinstance(routes, Sequence) else ()


class RouteLabels:
    """Labels for one app's requests; the tree is walked on first use and again if the router changes."""

    def __init__(self) -> None:
        self._router: Any = None
        # id(route) -> its full template, or None for a Mount whose own routes all missed.
        # Keyed by id: Starlette routes define __eq__ and so are unhashable.
        self._templates: dict[int, str | None] = {}

    def label(self, scope: Scope) -> str:
        router = scope.get("router")
        if router is None:  # routing never ran: match the path as the router would have
            router = getattr(scope.get("app"), "router", None)
            route = matching_route(child_routes(router), scope) if router is not None else None
        else:
            route = scope.get("route")
        if route is None or router is None:
            return UNMATCHED
        if router is not self._router:
            self._templates = templates(child_routes(router))
            self._router = router
        if id(route) in self._templates:
            return self._templates[id(route)] or UNMATCHED
        # A route the tree does not show (inside a mounted app that hides its routes): its own template.
        return getattr(route, "path", None) or UNMATCHED


def templates(routes: Sequence[BaseRoute], prefix: str = "") -> dict[int, str | None]:
    """Every route under ``routes``, at any depth, with its full template."""
    found: dict[int, str | None] = {}
    for route in routes:
        template = prefix + str(getattr(route, "path", ""))
        inner = child_routes(route)
        # The first place a route object appears wins, should one be mounted twice.
        found.setdefault(id(route), None if inner else template)
        for key, value in templates(inner, template).items():
            found.setdefault(key, value)
    return found


def matching_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The endpoint route the router would pick for this request (a full match, else the first
    partial one, as Starlette does: a 405), descending into mounts; None when nothing matches."""
    chosen: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            chosen = route, child_scope
            break
        if match is Match.PARTIAL and chosen is None:
            chosen = route, child_scope
    if chosen is None:
        return None
    route, child_scope = chosen
    inner = child_routes(route)
    return matching_route(inner, {**scope, **child_scope}) if inner else route
