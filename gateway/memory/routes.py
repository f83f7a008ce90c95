"""The memory REST API's routes (with request lookups, the OpenAPI document and the mem0-compatible
API under /mem0), mounted by create_app."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from gateway.memory import imports
from gateway.memory.mem0 import mem0_routes
from gateway.memory.reads import get_memory, list_memories, memory_history, search_memories
from gateway.memory.request_lookup import lookup_request
from gateway.memory.user_list import get_user, list_users
from gateway.memory.users import erase_user, export_user, list_user_events
from gateway.memory.writes import correct_memory, create_memories, delete_memory
from gateway.openapi import openapi_document


def memory_routes(prefix: str = "/v1") -> list[BaseRoute]:
    """``prefix`` is ``server.memory_api_prefix``: the memory API moves there; /openapi.json and /mem0 stay."""
    return [
        Route(prefix + "/memories", list_memories, methods=["GET"]),
        Route(prefix + "/memories", create_memories, methods=["POST"]),
        Route(prefix + "/memories/search", search_memories, methods=["POST"]),
        Route(prefix + "/memories/{memory_id}", get_memory, methods=["GET"]),
        Route(prefix + "/memories/{memory_id}", correct_memory, methods=["PATCH"]),
        Route(prefix + "/memories/{memory_id}", delete_memory, methods=["DELETE"]),
        Route(prefix + "/memories/{memory_id}/history", memory_history, methods=["GET"]),
        Route(prefix + "/events", list_user_events, methods=["GET"]),
        Route(prefix + "/users", list_users, methods=["GET"]),
        Route(prefix + "/users/{user_id}", get_user, methods=["GET"]),
        Route(prefix + "/users/{user_id}", erase_user, methods=["DELETE"]),
        Route(prefix + "/users/{user_id}/export", export_user, methods=["GET"]),
        Route(prefix + "/requests/{request_id}", lookup_request, methods=["GET"]),
        Route(prefix + "/imports", imports.create, methods=["POST"]),
        Route(prefix + "/imports/estimate", imports.estimate_cost, methods=["GET"]),
        Route(prefix + "/imports/{import_id}", imports.show, methods=["GET"]),
        Route(prefix + "/imports/{import_id}/exchanges", imports.add_batch, methods=["POST"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
        Mount("/mem0", routes=mem0_routes()),
    ]
