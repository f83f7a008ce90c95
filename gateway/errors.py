"""Errors on /v1/* in OpenAI's shape (Anthropic's on its Messages API, /v1/messages), and the
one place upstream failures are translated.

GatewayError (an OpenAI-shaped error with an HTTP status)
 ├── raised for bad input at the edge (400, 404, 413, 415)
 └── produced by :func:`map_upstream_errors` from httpx failures:
      timeout → 504, unreachable/reset → 502, upstream 4xx/5xx relayed with its own body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


ANTHROPIC_PATHS = frozenset({"/v1/messages"})
# Anthropic's error types by status; an upstream's own Anthropic type is kept as it came.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_TYPES = frozenset({*ANTHROPIC_ERROR_TYPES.values(), "api_error"})


def anthropic_error_body(error: GatewayError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``, what Anthropic's SDKs parse. A specific
    Anthropic type (an upstream's ``overloaded_error``) is kept; the rest follow the status."""
    specific = error.type in ANTHROPIC_TYPES and error.type != "invalid_request_error"
    kind = error.type if specific else ANTHROPIC_ERROR_TYPES.get(error.status)
    if kind is None:
        kind = "api_error" if error.status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_response(error: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(anthropic_error_body(error), status_code=error.status, headers=headers)


def error_response(path: str, error: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error in the shape the clients of ``path`` parse."""
    return anthropic_response(error, headers) if path in ANTHROPIC_PATHS else error.response(headers)


def memory_unavailable(exc: Exception) -> GatewayError:
    return GatewayError(
        503, f"memory backend unavailable: {type(exc).__name__}", type="server_error", code="memory_unavailable"
    )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def upstream_status_error(status: int, content: bytes) -> GatewayError:
    """An upstream's own error, relayed with its status and (when it is OpenAI-shaped) its message."""
    message, error_type, code = f"upstream returned HTTP {status}", "upstream_error", None
    try:
        error = json.loads(content).get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type = str(error.get("type") or error_type)
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        pass
    status = status if 400 <= status <= 599 else 502
    return GatewayError(status, message, type=error_type, code=code)


@asynccontextmanager
async def map_upstream_errors() -> AsyncIterator[None]:
    """Wrap every upstream call and stream iteration, so failures read the same everywhere."""
    try:
        yield
    except GatewayError:
        raise
    except httpx.TimeoutException as exc:
        raise GatewayError(504, "upstream timed out", type="upstream_error", code="upstream_timeout") from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise GatewayError(
            502, f"upstream unreachable: {type(exc).__name__}", type="upstream_error", code="upstream_unreachable"
        ) from exc
    except httpx.HTTPError as exc:
        raise GatewayError(502, f"upstream failed: {type(exc).__name__}", type="upstream_error") from exc
    except Exception as exc:
        if not type(exc).__module__.startswith("litellm"):
            raise
        raise litellm_error(exc) from exc


def litellm_error(exc: Exception) -> GatewayError:
    """litellm's exceptions carry the provider's status; its timeouts say 408, which for a proxy is a 504."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if name == "Timeout" or status == 408:
        return GatewayError(504, "upstream timed out", type="upstream_error", code="upstream_timeout")
    if name == "APIConnectionError" or not isinstance(status, int) or not 400 <= status <= 599:
        return GatewayError(502, f"upstream unreachable: {name}", type="upstream_error", code="upstream_unreachable")
    message = str(getattr(exc, "message", "") or exc)
    return GatewayError(status, message, type="upstream_error")
