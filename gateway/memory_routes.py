"""The memory REST API's routes (with request lookups, the OpenAPI document and the mem0-compatible
API under /mem0), mounted by create_app."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from gateway.mem0_compat import mem0_routes
from gateway.memories import get_memory, list_memories, memory_history, search_memories
from gateway.memory_admin import erase_user, export_user, list_user_events
from gateway.memory_writes import correct_memory, create_memories, delete_memory
from gateway.openapi import openapi_document
from gateway.request_log import lookup_request


def memory_routes() -> list[BaseRoute]:
    return [
        Route("/v1/memories", list_memories, methods=["GET"]),
        Route("/v1/memories", create_memories, methods=["POST"]),
        Route("/v1/memories/search", search_memories, methods=["POST"]),
        Route("/v1/memories/{memory_id}", get_memory, methods=["GET"]),
        Route("/v1/memories/{memory_id}", correct_memory, methods=["PATCH"]),
        Route("/v1/memories/{memory_id}", delete_memory, methods=["DELETE"]),
        Route("/v1/memories/{memory_id}/history", memory_history, methods=["GET"]),
        Route("/v1/events", list_user_events, methods=["GET"]),
        Route("/v1/users/{user_id}", erase_user, methods=["DELETE"]),
        Route("/v1/users/{user_id}/export", export_user, methods=["GET"]),
        Route("/v1/requests/{request_id}", lookup_request, methods=["GET"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
        Mount("/mem0", routes=mem0_routes()),
    ]
