"""Listing users over REST: ``GET /v1/users`` (the caller's tenant's users by id prefix, with
their counts and activity), ``GET /v1/users/{user_id}`` (one of them, or a 404) and the mem0
SDK's ``users()`` (``GET /mem0/v1/entities/``).

A tenant key lists under ``<tenant>/`` only, and an admin under the tenant it names in
X-Mnemo-Tenant, or the plain ids without one: the store lists the ids directly under a prefix,
so no listing ever reaches into another tenant's namespace (mnemo.store.users)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import Access, access_of
from gateway.errors import GatewayError, bad_request
from gateway.memory.params import MAX_LIMIT, parse_int, parse_page, services_of, user_id_of
from gateway.memory.views import list_json
from mnemo.store.users import UserListing, UserSummary

# What an id may start with: the id alphabet (gateway.identity.ID_PATTERN), empty included.
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9._:@+\-]{0,128}")
MEM0_PAGE = 100


def user_json(user: UserSummary, access: Access) -> dict[str, Any]:
    return {
        "object": "user",
        "user_id": access.public_user(user.user_id),
        "memories": user.memories,
        "total_memories": user.total_memories,
        "events": user.events,
        "first_activity": user.first_activity.isoformat() if user.first_activity else None,
        "last_activity": user.last_activity.isoformat() if user.last_activity else None,
    }


def listing_prefix(request: Request, param: str = "prefix") -> str:
    """The stored-id prefix of the caller's ``prefix``: inside its tenant's namespace, if any."""
    typed = request.query_params.get(param, "")
    if not PREFIX_PATTERN.fullmatch(typed):
        raise bad_request(
            f"{param} must be up to 128 characters of letters, digits and . _ : @ + -", param=param, code="invalid_id"
        )
    return access_of(request).user(typed)


async def list_users(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    limit, offset = parse_page(request.query_params)
    listing = await services.core.store.list_users(listing_prefix(request), limit=limit, offset=offset)
    return JSONResponse(
        list_json(
            [user_json(user, access) for user in listing.users],
            limit=limit,
            offset=offset,
            total=listing.total,
            has_more=offset + len(listing.users) < listing.total,
            complete=listing.complete,
        )
    )


async def get_user(request: Request) -> JSONResponse:
    """One user's row; 404 for an id that holds nothing, or another tenant's (existence stays hidden)."""
    services, access = services_of(request), access_of(request)
    user_id = user_id_of(request, request.path_params)
    listing = await services.core.store.list_users(user_id, limit=1)  # ids sort after their prefixes
    if not listing.users or listing.users[0].user_id != user_id:
        message = f"no user {access.public_user(user_id)!r} holds memories or events"
        raise GatewayError(404, message, param="user_id", code="user_not_found")
    return JSONResponse(user_json(listing.users[0], access))


def mem0_entity(user: UserSummary, access: Access) -> dict[str, Any]:
    """A user as the mem0 platform's entities list shows one."""
    return {
        "id": access.public_user(user.user_id),
        "name": access.public_user(user.user_id),
        "type": "user",
        "total_memories": user.memories,
        "created_at": user.first_activity.isoformat() if user.first_activity else None,
        "updated_at": user.last_activity.isoformat() if user.last_activity else None,
        "owner": access.tenant or "mnemo",
        "organization": "mnemo",
        "metadata": {},
    }


async def mem0_users(request: Request) -> JSONResponse:
    """``MemoryClient.users()``: Mnemo's entities are users (agents and sessions live inside them)."""
    services, access = services_of(request), access_of(request)
    page = parse_int(request.query_params.get("page"), "page", 1, 1, 10**6)
    size = parse_int(request.query_params.get("page_size"), "page_size", MEM0_PAGE, 1, MAX_LIMIT)
    listing: UserListing = await services.core.store.list_users(access.user(""), limit=size, offset=(page - 1) * size)
    url = str(request.url.remove_query_params(["page"]))
    joiner = "&" if "?" in url else "?"
    more = page * size < listing.total
    return JSONResponse(
        {
            "count": listing.total,
            "next": f"{url}{joiner}page={page + 1}" if more else None,
            "previous": f"{url}{joiner}page={page - 1}" if page > 1 else None,
            "results": [mem0_entity(user, access) for user in listing.users],
        }
    )
