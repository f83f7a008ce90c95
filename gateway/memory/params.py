"""Reading the memory API's query strings, bodies and path ids: every malformed value is a 400
naming its parameter, every unknown (or other tenant's) memory a 404."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from gateway.access import Access, access_of
from gateway.body import read_json_object
from gateway.errors import GatewayError, bad_request
from gateway.identity import ID_PATTERN, validate_id
from gateway.services import Services
from mnemo.models import Memory

MAX_LIMIT = 500
METADATA_PREFIX = "metadata."


def services_of(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def read_body(request: Request) -> dict[str, Any]:
    return await read_json_object(request, services_of(request).settings.server.max_body_bytes)


def not_found(memory_id: str) -> GatewayError:
    return GatewayError(404, f"no memory with id {memory_id!r}", param="id", code="memory_not_found")


async def load_memory(services: Services, memory_id: str, access: Access) -> Memory:
    """The memory, or 404 when it does not exist or belongs to another tenant (existence stays hidden)."""
    if not ID_PATTERN.fullmatch(memory_id):
        raise not_found(memory_id)
    memory = await services.core.store.get(memory_id)
    if memory is None or not access.sees(memory.user_id):
        raise not_found(memory_id)
    return memory


def parse_time(value: str | None, param: str) -> datetime | None:
    if value in (None, ""):
        return None
    # An unencoded "+00:00" offset arrives as " 00:00" in a query string.
    text = value.strip().replace(" ", "+") if "T" in value else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{param} must be an ISO-8601 timestamp", param=param) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_bool(value: str | None, param: str) -> bool:
    if value in (None, ""):
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_request(f"{param} must be true or false", param=param)


def parse_int(value: str | None, param: str, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{param} must be an integer", param=param) from None
    if not low <= number <= high:
        raise bad_request(f"{param} must be between {low} and {high}", param=param)
    return number


def parse_page(query: QueryParams) -> tuple[int, int]:
    limit = parse_int(query.get("limit"), "limit", 100, 1, MAX_LIMIT)
    return limit, parse_int(query.get("offset"), "offset", 0, 0, 10**9)


def metadata_filters(query: QueryParams) -> dict[str, Any] | None:
    filters: dict[str, Any] = {}
    for key, value in query.multi_items():
        if key.startswith(METADATA_PREFIX):
            name = key[len(METADATA_PREFIX) :]
            if not name:
                raise bad_request("metadata filters read metadata.<key>=<value>", param=key)
            filters[name] = value
    return filters or None


def user_id_of(request: Request, data: Mapping[str, Any], field: str = "user_id") -> str:
    """The stored id of the user the request names, namespaced by the caller's tenant."""
    return access_of(request).user(required_id(data, field))


def required_id(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise bad_request(f"`{field}` is required and must be a string", param=field)
    return validate_id(value, field)


def optional_id(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise bad_request(f"`{field}` must be a string", param=field)
    return validate_id(value, field)


def body_text(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_request(f"`{field}` must be a non-empty string", param=field)
    return value


def body_number(body: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"`{field}` must be a number between {low} and {high}", param=field)
    return float(value)


def body_int(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"`{field}` must be an integer between {low} and {high}", param=field)
    return value
