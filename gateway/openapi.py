"""GET /openapi.json: the OpenAPI 3.1 document of the gateway, written by hand so it says what the
handlers accept (they parse bodies themselves; there are no models to generate it from). A test
keeps it honest: every route of the app must appear here."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}
ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+\\-]{0,127}$"}
TIME = {"type": "string", "format": "date-time"}
OPTIONAL_ID = {"anyOf": [ID, {"type": "null"}]}


def _param(name: str, where: str = "query", schema: dict[str, Any] | None = None, required: bool = False) -> Any:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema or ID}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _op(summary: str, *params: Any, body: dict[str, Any] | None = None, ok: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            ok: {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}},
            "default": {"description": "An error in OpenAI's shape", "content": {JSON: {"schema": ERROR}}},
        },
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def console_op(summary: str, media_types: list[str], *params: Any) -> dict[str, Any]:
    """A file of the memory console, served without a key."""
    operation = _op(summary, *params)
    operation["responses"]["200"] = {"description": "OK", "content": {media: {} for media in media_types}}
    operation["security"] = [{}]
    return operation


PAGE = [
    _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 500}),
    _param("offset", schema={"type": "integer", "minimum": 0}),
]
MEMORY_ID = _param("memory_id", "path")
MESSAGES = {"type": "array", "items": {"type": "object", "properties": {"role": {"type": "string"}}}}
METADATA = {"type": "object"}
SCOPE = {"user_id": ID, "agent_id": OPTIONAL_ID, "session_id": OPTIONAL_ID}
MEM0_BODY = {"filters": {"type": "object"}, "user_id": ID, "agent_id": ID, "run_id": ID}


def memory_paths() -> dict[str, Any]:
    listing = [_param("user_id", required=True), _param("agent_id"), _param("session_id"), *PAGE]
    listing += [_param(name, schema={"type": "boolean"}) for name in ("include_invalidated",)]
    listing += [_param(name, schema=TIME) for name in ("as_of", "created_after", "created_before")]
    create = {**SCOPE, "facts": {"type": "array", "items": {"type": "string"}}, "messages": MESSAGES}
    create |= {"infer": {"type": "boolean"}, "metadata": METADATA, "expires_at": TIME}
    search = {"query": {"type": "string"}, "user_id": ID, "agent_id": OPTIONAL_ID, "limit": {"type": "integer"}}
    search["threshold"] = {"type": "number"}
    return {
        "/v1/memories": {
            "get": _op("List a user's memories (point in time with as_of)", *listing),
            "post": _op("Add facts, or messages (verbatim or through the worker)", body=_body(create, ["user_id"])),
        },
        "/v1/memories/search": {"post": _op("Search a user's memories", body=_body(search, ["query", "user_id"]))},
        "/v1/memories/{memory_id}": {
            "get": _op("One memory", MEMORY_ID),
            "patch": _op(
                "Correct a memory (new version)",
                MEMORY_ID,
                body=_body({"text": {"type": "string"}, "reason": {"type": "string"}, "expires_at": TIME}, []),
            ),
            "delete": _op(
                "Invalidate a memory, or erase its chain", MEMORY_ID, _param("hard", schema={"type": "boolean"})
            ),
        },
        "/v1/memories/{memory_id}/history": {"get": _op("Every version and event of a memory", MEMORY_ID)},
        "/v1/events": {"get": _op("A user's audit feed", _param("user_id", required=True), *PAGE)},
        "/v1/users": {
            "get": _op(
                "The caller's tenant's users by id, with their counts and first and last activity",
                _param("prefix", schema={"type": "string", "pattern": "^[A-Za-z0-9._:@+\\-]{0,128}$"}),
                *PAGE,
            )
        },
        "/v1/users/{user_id}": {
            "get": _op("One user's counts and activity (404 when nothing is held)", _param("user_id", "path")),
            "delete": _op("Erase everything held about a user", _param("user_id", "path")),
        },
        "/v1/users/{user_id}/export": {"get": _op("Everything held about a user", _param("user_id", "path"))},
        "/v1/requests/{request_id}": {
            "get": _op(
                "Memories injected into and created by a request", _param("request_id", "path"), _param("user_id")
            )
        },
        **import_paths(),
    }


def import_paths() -> dict[str, Any]:
    import_id = _param("import_id", "path", {"type": "string"})
    start = {"user_id": ID, "agent_id": OPTIONAL_ID, "mode": {"enum": ["raw", "llm", None]}}
    start["format"] = {"type": "string"}
    past = {
        "type": "object",
        "properties": {
            "conversation_id": {"type": "string"},
            "id": {"type": "string"},
            "messages": MESSAGES,
            "reply": {"type": "string"},
            "created_at": TIME,
            "metadata": METADATA,
        },
        "required": ["conversation_id", "id", "messages"],
    }
    batch = {"user_id": ID, "agent_id": OPTIONAL_ID, "exchanges": {"type": "array", "items": past}}
    batch["final"] = {"type": "boolean"}
    counts = [_param(name, schema={"type": "integer", "minimum": 0}) for name in ("exchanges", "characters")]
    counts.append(_param("mode", schema={"type": "string"}))
    return {
        "/v1/imports": {"post": _op("Start an import of past conversations", body=_body(start, ["user_id"]), ok="201")},
        "/v1/imports/estimate": {"get": _op("LLM calls and tokens an import of this size would cost", *counts)},
        "/v1/imports/{import_id}": {"get": _op("An import's progress and result", import_id)},
        "/v1/imports/{import_id}/exchanges": {
            "post": _op(
                "Enqueue a batch of past exchanges (429 import_backpressure: resend after Retry-After)",
                import_id,
                body=_body(batch, ["user_id", "exchanges"]),
            )
        },
    }


def gateway_paths() -> dict[str, Any]:
    chat = {"model": {"type": "string"}, "messages": MESSAGES, "stream": {"type": "boolean"}}
    headers = [
        _param(name, "header", schema={"type": "string"})
        for name in (
            *("X-Mnemo-Api-Key", "X-Mnemo-User-Id", "X-Mnemo-Agent-Id", "X-Mnemo-Session-Id", "X-Mnemo-Memory"),
            "X-Mnemo-Expires-In",
        )
    ]
    return {
        "/v1/chat/completions": {
            "post": _op(
                "OpenAI chat completions with memory (other fields pass through)",
                *headers,
                body=_body(chat, ["model", "messages"]),
            )
        },
        "/v1/responses": {
            "post": _op(
                "OpenAI Responses API with memory in instructions (other fields pass through)",
                *headers,
                body=_body({"model": {"type": "string"}, "input": {}, "stream": {"type": "boolean"}}, ["model"]),
            )
        },
        "/v1/messages": {
            "post": _op(
                "Anthropic Messages API with memory in system (errors in Anthropic's shape)",
                *headers,
                body=_body(chat, ["model", "messages"]),
            )
        },
        "/v1/models": {"get": _op("The model table")},
        "/healthz": {"get": _op("Liveness")},
        "/readyz": {"get": _op("Readiness of the store, embedder and queue")},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/openapi.json": {"get": _op("This document")},
        "/ui": {"get": console_op("The memory console (its API calls carry the key typed into it)", ["text/html"])},
        "/ui/{asset}": {
            "get": console_op(
                "A script, style sheet or icon of the memory console",
                ["text/javascript", "text/css", "image/svg+xml"],
                _param("asset", "path", {"type": "string"}),
            )
        },
    }


def mem0_paths() -> dict[str, Any]:
    mem0_id = _param("memory_id", "path")
    entities = [_param(name) for name in ("user_id", "agent_id", "run_id")]
    add = {**MEM0_BODY, "messages": MESSAGES, "infer": {"type": "boolean"}, "metadata": METADATA}
    add["expiration_date"] = {"type": "string", "format": "date"}
    search = {**MEM0_BODY, "query": {"type": "string"}, "top_k": {"type": "integer"}, "threshold": {"type": "number"}}
    paging = [_param("page", schema={"type": "integer", "minimum": 1}), _param("page_size", schema={"type": "integer"})]
    return {
        "/mem0/v1/ping/": {"get": _op("mem0 SDK start-up check")},
        "/mem0/v3/memories/add/": {"post": _op("mem0 add", body=_body(add, ["messages"]))},
        "/mem0/v3/memories/": {"post": _op("mem0 get_all", *paging, body=_body(MEM0_BODY, []))},
        "/mem0/v3/memories/search/": {"post": _op("mem0 search", body=_body(search, ["query"]))},
        "/mem0/v1/memories/": {"delete": _op("mem0 delete_all (one scope; user_id required)", *entities)},
        "/mem0/v1/memories/{memory_id}/": {
            "get": _op("mem0 get", mem0_id),
            "put": _op("mem0 update", mem0_id, body=_body({"text": {"type": "string"}}, ["text"])),
            "delete": _op("mem0 delete", mem0_id),
        },
        "/mem0/v1/memories/{memory_id}/history/": {"get": _op("mem0 history", mem0_id)},
        "/mem0/v1/entities/": {"get": _op("mem0 users: the tenant's users", *paging)},
    }


def build_document(memory_prefix: str = "/v1") -> dict[str, Any]:
    """``memory_prefix``: ``server.memory_api_prefix``, where the memory API's paths are."""
    memory = {memory_prefix + path.removeprefix("/v1"): ops for path, ops in memory_paths().items()}
    error = {"type": ["string", "null"]}
    error_object = {"message": {"type": "string"}, "type": {"type": "string"}, "param": error, "code": error}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mnemo", "version": "1", "description": "OpenAI-compatible memory gateway"},
        "paths": {**gateway_paths(), **memory, **mem0_paths()},
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": error_object}},
                    "required": ["error"],
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Mnemo-Api-Key"},
            },
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(build_document(request.state.services.settings.server.memory_api_prefix))
