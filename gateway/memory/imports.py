"""Importing past conversations (``mnemo import``): an import is created, then fed batches of
past exchanges, each enqueued like a live chat's (same queue, same worker, per-user order), with
the conversation's own time, and a request id derived from the file's own ids so a re-run or a
resumed run creates nothing twice. Progress is a record in Redis (mnemo.imports) that the
gateway counts what it enqueued on and the worker what it applied.

An import runs at the worker's pace: a batch is refused (429 import_backpressure, Retry-After)
while the user already has ``imports.max_pending`` exchanges waiting, so an import never fills
Redis with a whole file, and a live chat of the same user waits behind at most that many.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import Access, access_of
from gateway.errors import GatewayError, bad_request
from gateway.memory.params import optional_id, parse_int, parse_time, read_body, services_of, user_id_of
from gateway.memory.writes import read_messages
from gateway.services import Services
from mnemo.errors import QueueError
from mnemo.import_formats import FORMATS
from mnemo.imports import (
    IMPORT_MODEL,
    ImportRecord,
    add_counts,
    create_import,
    estimate,
    finish_input,
    import_request_id,
    new_import_id,
    read_import,
    scope_hash,
)
from mnemo.job_metrics import read_totals
from mnemo.messages import to_exchange_messages
from mnemo.models import Scope, utcnow
from mnemo.queue import Exchange, ExchangeQueue
from mnemo.user_order import epoch_ms

MAX_BATCH = 200  # exchanges per batch request
MAX_FILE_ID = 256  # characters of a file's own conversation or message id
RETRY_AFTER_S = 1
MODES = ("raw", "llm")


class Backpressure(GatewayError):
    def __init__(self, pending: int, limit: int) -> None:
        super().__init__(
            429,
            f"this user has {pending} exchanges waiting to be applied (imports.max_pending is {limit}); "
            f"send this batch again in {RETRY_AFTER_S} s",
            type="rate_limit_error",
            code="import_backpressure",
        )

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return super().response({"Retry-After": str(RETRY_AFTER_S), **(headers or {})})


@contextlib.contextmanager
def redis_calls() -> Iterator[None]:
    """Redis failing is the queue being down: a 503 through the app's one MnemoError handler."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise QueueError(f"redis: {exc}") from exc


def queue_of(services: Services) -> ExchangeQueue:
    if services.queue is None:
        raise GatewayError(503, "no queue is configured", type="server_error", code="queue_unavailable")
    return services.queue


def read_mode(body: dict[str, Any]) -> str | None:
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise bad_request("`mode` must be raw or llm (or absent: the worker's extraction mode)", param="mode")
    return mode


def read_format(body: dict[str, Any]) -> str:
    fmt = body.get("format", "api")
    if fmt not in (*FORMATS, "api"):
        raise bad_request(f"`format` must be one of {', '.join(FORMATS)}", param="format")
    return str(fmt)


async def create(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    body = await read_body(request)
    user_id, agent_id = user_id_of(request, body), optional_id(body, "agent_id")
    mode, fmt = read_mode(body), read_format(body)
    queue = queue_of(services)
    import_id, started = new_import_id(), epoch_ms(utcnow().timestamp())
    prefix = services.settings.redis.queue_name
    with redis_calls():
        redis = await queue.pool()
        await create_import(
            redis,
            prefix,
            import_id,
            user_id=user_id,
            agent_id=agent_id,
            tenant=access.tenant,
            mode=mode,
            fmt=fmt,
            started_ms=started,
        )
        record = await read_import(redis, prefix, import_id)
    assert record is not None  # just written
    return JSONResponse(record.to_json(), status_code=201)


def import_not_found(import_id: str) -> GatewayError:
    return GatewayError(404, f"no import with id {import_id!r}", param="import_id", code="import_not_found")


def visible(record: ImportRecord, access: Access) -> bool:
    if access.tenant is not None:
        return record.tenant == access.tenant
    return access.admin


async def load_import(services: Services, import_id: str, access: Access) -> ImportRecord:
    """The import, or 404 when it does not exist, expired, or is another tenant's."""
    if not import_id.startswith("imp_") or len(import_id) > 64:
        raise import_not_found(import_id)
    with redis_calls():
        record = await read_import(await queue_of(services).pool(), services.settings.redis.queue_name, import_id)
    if record is None or not visible(record, access):
        raise import_not_found(import_id)
    return record


async def show(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    record = await load_import(services, request.path_params["import_id"], access)
    return JSONResponse(record.to_json())


def file_id(item: dict[str, Any], field: str, param: str) -> str:
    value = item.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILE_ID:
        raise bad_request(
            f"{param}.{field} must be a string of 1 to {MAX_FILE_ID} characters", param=f"{param}.{field}"
        )
    return value


def read_exchange(item: Any, index: int, record: ImportRecord, scope: Scope, max_messages: int) -> Exchange:
    param = f"exchanges[{index}]"
    if not isinstance(item, dict):
        raise bad_request(f"{param} must be an object", param=param)
    conversation_id, own_id = file_id(item, "conversation_id", param), file_id(item, "id", param)
    try:
        messages = read_messages(item, max_messages)
    except GatewayError as exc:
        raise bad_request(f"{param}: {exc.message}", param=f"{param}.messages") from None
    reply = item.get("reply", "")
    if not isinstance(reply, str):
        raise bad_request(f"{param}.reply must be a string", param=f"{param}.reply")
    at = item.get("created_at")
    if at is not None and not isinstance(at, str):
        raise bad_request(f"{param}.created_at must be an ISO-8601 timestamp", param=f"{param}.created_at")
    said: datetime | None = parse_time(at, f"{param}.created_at")
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_request(f"{param}.metadata must be an object", param=f"{param}.metadata")
    return Exchange(
        request_id=import_request_id(scope.user_id, scope.agent_id, conversation_id, own_id),
        scope=scope,
        model=IMPORT_MODEL,
        messages=to_exchange_messages(messages),
        reply=reply,
        # Accepted when the import was: an erasure since drops the whole import (mnemo.queue.Exchange).
        started_at=record.started_at,
        completed_at=said or record.started_at,
        extraction_mode=record.mode or None,  # type: ignore[arg-type]  # read_mode allowed only raw/llm
        metadata=metadata,
        import_id=record.id,
    )


async def add_batch(request: Request) -> JSONResponse:
    services, access = services_of(request), access_of(request)
    record = await load_import(services, request.path_params["import_id"], access)
    body = await read_body(request)
    scope = Scope(user_id=user_id_of(request, body), agent_id=optional_id(body, "agent_id"))
    if scope_hash(scope.user_id, scope.agent_id) != record.scope:
        raise bad_request("user_id and agent_id must be the import's own", param="user_id", code="scope_mismatch")
    items, final = body.get("exchanges", []), body.get("final", False)
    if not isinstance(items, list) or len(items) > MAX_BATCH:
        raise bad_request(f"`exchanges` must be an array of at most {MAX_BATCH}", param="exchanges")
    if not isinstance(final, bool):
        raise bad_request("`final` must be a boolean", param="final")
    exchanges = [
        read_exchange(item, index, record, scope, services.settings.limits.max_messages_per_write)
        for index, item in enumerate(items)
    ]
    if record.erased:
        raise GatewayError(409, "the user was erased after this import started; start a new import", code="user_erased")
    counts = await enqueue_batch(services, record, scope, exchanges)
    prefix = services.settings.redis.queue_name
    with redis_calls():
        redis = await queue_of(services).pool()
        await add_counts(redis, prefix, record.id, counts)
        if final:
            await finish_input(redis, prefix, record.id)
        updated = await read_import(redis, prefix, record.id)
    return JSONResponse({"object": "import.batch", **counts, "import": (updated or record).to_json()})


async def enqueue_batch(
    services: Services, record: ImportRecord, scope: Scope, exchanges: list[Exchange]
) -> dict[str, int]:
    queue = queue_of(services)
    counts = {"submitted": len(exchanges), "queued": 0, "duplicates": 0, "refused": 0}
    if not exchanges:
        return counts
    limit = services.settings.imports.max_pending
    with redis_calls():
        pending = await queue.order.pending_count(await queue.pool(), scope.user_id)
    if pending >= limit:
        raise Backpressure(pending, limit)
    for exchange in exchanges:  # one by one, in order: the user's list keeps the file's order
        verdict = await queue.enqueue(exchange)
        counts[{1: "queued", 0: "duplicates"}.get(verdict, "refused")] += 1
    return counts


async def estimate_cost(request: Request) -> JSONResponse:
    """What importing a file of these counts would cost the extraction LLM (``mnemo import --dry-run``)."""
    services = services_of(request)
    query = request.query_params
    exchanges = parse_int(query.get("exchanges"), "exchanges", 0, 0, 10**9)
    characters = parse_int(query.get("characters"), "characters", 0, 0, 10**13)
    mode = query.get("mode") or services.settings.extraction.effective_mode
    if mode not in MODES:
        raise bad_request("mode must be raw or llm", param="mode")
    with redis_calls():
        totals = await read_totals(await queue_of(services).pool(), services.settings.redis.queue_name)
    return JSONResponse(estimate(mode, exchanges, characters, totals).to_json())
