"""Reading a JSON request body with a size limit and clear 4xx errors for anything malformed,
charged to the gateway's body budget (gateway.limits) before it is kept or parsed."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from gateway.errors import GatewayError, bad_request
from gateway.limits import bytes_cost, share_of, values_cost


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    charged = int(declared) if declared is not None and declared.isdigit() else 0
    if charged > max_bytes:
        raise too_large(max_bytes)
    share = share_of(request)
    share.charge(bytes_cost(charged))  # a declared body is refused before a byte of it is read
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            if size > charged:  # chunked, or more than declared
                share.charge(bytes_cost(size - charged))
                charged = size
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("the client disconnected while sending the body") from None
    raw = b"".join(chunks)
    del chunks
    share.charge(values_cost(raw))
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    return data


def too_large(max_bytes: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than the {max_bytes}-byte limit", code="request_too_large")
