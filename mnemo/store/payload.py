"""How memories and events are laid out as Qdrant payloads, shared by both backends.

Timestamps are stored twice: ISO strings (read back into the models) and float epoch
seconds (``created_ts``, ``invalid_ts``) for range filters. A valid memory's ``invalid_ts``
is a far-future sentinel, so "valid at t" is the pure range ``created_ts <= t < invalid_ts``
and "valid now" is ``invalid_ts >= VALID_TS``. The ``valid`` boolean is kept for readers of the
payload, not for filters: qdrant-edge 0.9 sends ``MatchValue(True)`` as the integer 1.
Missing agent/session ids are stored as "" so "this agent or none" is a single
``MatchAny([agent, ""])``. Expiry (mnemo.retention) is ``expires_ts``, the same far-future sentinel
when a memory never expires, so "not expired" is the range ``expires_ts > now`` on every read.

Filters are built here as backend-neutral conditions; each backend translates them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mnemo.errors import StoreError, StoreMismatchError
from mnemo.models import Memory, MemoryEvent, Scope, text_hash
from mnemo.retention import now
from mnemo.store.base import StoreIdentity

DENSE_VECTOR = "dense"
# Indexed, so a verbatim twin of a new memory is found without scanning the user's memories.
TEXT_HASH = "text_hash"
# Memory.line_tokens: excluded from the model's JSON (an API detail), so written here by name.
LINE_TOKENS = "line_tokens"
EXPIRES_TS = "expires_ts"
# Beyond any datetime (year 9999 is ~2.5e11 s), so invalidation at any real moment sorts below it.
VALID_TS = 1e15
IDENTITY_SCHEMA_VERSION = 1

# Qdrant point ids must be UUIDs or integers; other ids map onto a stable uuid5.
_POINT_NAMESPACE = uuid.UUID("0b7d5f0e-2c1b-4f43-9a57-61f1c3a8d2e4")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def point_id(item_id: str) -> str:
    try:
        return str(uuid.UUID(item_id))
    except ValueError:
        return str(uuid.uuid5(_POINT_NAMESPACE, item_id))


def epoch(moment: datetime) -> float:
    # A naive datetime is taken as UTC rather than the machine's local zone.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def memory_payload(memory: Memory) -> dict[str, Any]:
    payload = memory.model_dump(mode="json")
    payload["memory_id"] = payload.pop("id")
    payload["agent_id"] = memory.agent_id or ""
    payload["session_id"] = memory.session_id or ""
    payload["created_ts"] = epoch(memory.created_at)
    payload["invalid_ts"] = VALID_TS if memory.invalid_at is None else epoch(memory.invalid_at)
    payload["valid"] = memory.invalid_at is None
    payload[TEXT_HASH] = text_hash(memory.text)
    payload[EXPIRES_TS] = expiry_ts(memory.expires_at)
    if memory.line_tokens is not None:
        payload[LINE_TOKENS] = memory.line_tokens
    return payload


def expiry_ts(expires_at: datetime | None) -> float:
    return VALID_TS if expires_at is None else epoch(expires_at)


def expiry_payload(expires_at: datetime | None) -> dict[str, Any]:
    """The fields ``set_expiry`` overwrites."""
    return {"expires_at": None if expires_at is None else expires_at.isoformat(), EXPIRES_TS: expiry_ts(expires_at)}


def is_expired(payload: Mapping[str, Any], moment: datetime | None = None) -> bool:
    stamp = payload.get(EXPIRES_TS)
    return isinstance(stamp, int | float) and stamp <= epoch(moment or now())


def invalidation_payload(invalid_at: datetime, superseded_by: str | None) -> dict[str, Any]:
    """The fields ``invalidate`` overwrites; the rest of the point stays as it was."""
    return {
        "invalid_at": invalid_at.isoformat(),
        "invalid_ts": epoch(invalid_at),
        "valid": False,
        "superseded_by": superseded_by,
    }


# Read once: pydantic's ``model_fields`` is a computed class property, and a membership test
# against it per payload key cost ~25 us per memory read (half a search's time on 10 hits).
MEMORY_FIELDS = frozenset(Memory.model_fields)
EVENT_FIELDS = frozenset(MemoryEvent.model_fields)


def memory_from_payload(payload: Mapping[str, Any]) -> Memory:
    data = {key: value for key, value in payload.items() if key in MEMORY_FIELDS}
    data["id"] = payload["memory_id"]
    data["agent_id"] = payload.get("agent_id") or None
    data["session_id"] = payload.get("session_id") or None
    return Memory.model_validate(data)


def event_payload(event: MemoryEvent) -> dict[str, Any]:
    payload = event.model_dump(mode="json")
    payload["event_id"] = payload.pop("id")
    payload["agent_id"] = event.agent_id or ""
    payload["created_ts"] = epoch(event.created_at)
    return payload


def event_from_payload(payload: Mapping[str, Any]) -> MemoryEvent:
    data = {key: value for key, value in payload.items() if key in EVENT_FIELDS}
    data["id"] = payload["event_id"]
    data["agent_id"] = payload.get("agent_id") or None
    return MemoryEvent.model_validate(data)


def sort_events(events: Sequence[MemoryEvent]) -> list[MemoryEvent]:
    # Oldest first; the id breaks ties so the order is stable across backends.
    return sorted(events, key=lambda event: (epoch(event.created_at), event.id))


# --- collection identity --------------------------------------------------------------


def identity_record(identity: StoreIdentity) -> dict[str, Any]:
    return {
        "schema_version": IDENTITY_SCHEMA_VERSION,
        "embedder_model": identity.embedder_model,
        "dimension": identity.dimension,
    }


def identity_from_record(record: Mapping[str, Any] | None) -> StoreIdentity | None:
    if not record or "embedder_model" not in record or "dimension" not in record:
        return None
    return StoreIdentity(embedder_model=str(record["embedder_model"]), dimension=int(record["dimension"]))


def check_identity(stored: StoreIdentity, wanted: StoreIdentity, where: str) -> None:
    if stored != wanted:
        raise StoreMismatchError(
            f"the memory store at {where} was built by embedder {stored.embedder_model!r} "
            f"(dimension {stored.dimension}), but the configured embedder is {wanted.embedder_model!r} "
            f"(dimension {wanted.dimension}); configure the original embedder or point the store at a new location"
        )


def check_vector(vector: Sequence[float], identity: StoreIdentity) -> None:
    if len(vector) != identity.dimension:
        raise StoreError(f"vector has {len(vector)} dimensions, the store expects {identity.dimension}")


# --- filters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAnyOf:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Between:
    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class IsNull:
    key: str


Condition = Match | MatchAnyOf | Between | IsNull


def user_conditions(user_id: str, memory_id: str | None = None) -> list[Condition]:
    conditions: list[Condition] = [Match("user_id", user_id)]
    if memory_id is not None:
        conditions.append(Match("memory_id", memory_id))
    return conditions


def unexpired() -> Condition:
    """Checked on every read, so a memory is gone the moment it expires, sweep or no sweep."""
    return Between(EXPIRES_TS, gt=epoch(now()))


def expired_conditions(moment: datetime) -> list[Condition]:
    return [Between(EXPIRES_TS, lte=epoch(moment))]


def search_conditions(scope: Scope, include_invalidated: bool) -> list[Condition]:
    conditions = [*user_conditions(scope.user_id), unexpired()]
    if scope.agent_id is not None:
        # An agent sees its own memories and the ones shared by every agent of the user.
        conditions.append(MatchAnyOf("agent_id", (scope.agent_id, "")))
    if not include_invalidated:
        conditions.append(Between("invalid_ts", gte=VALID_TS))
    return conditions


def text_conditions(scope: Scope, texts: Sequence[str]) -> list[Condition]:
    hashes = tuple(dict.fromkeys(text_hash(text) for text in texts))
    return [*search_conditions(scope, include_invalidated=False), MatchAnyOf(TEXT_HASH, hashes)]


def list_conditions(
    scope: Scope,
    *,
    include_invalidated: bool,
    as_of: datetime | None,
    created_after: datetime | None,
    created_before: datetime | None,
    metadata: Mapping[str, Any] | None,
) -> list[Condition]:
    # Expired is gone for as_of too: history does not keep what retention erases (mnemo.retention).
    conditions = [*user_conditions(scope.user_id), unexpired()]
    if scope.agent_id is not None:
        conditions.append(Match("agent_id", scope.agent_id))
    if scope.session_id is not None:
        conditions.append(Match("session_id", scope.session_id))
    if as_of is not None:
        moment = epoch(as_of)
        conditions += [Between("created_ts", lte=moment), Between("invalid_ts", gt=moment)]
    elif not include_invalidated:
        conditions.append(Between("invalid_ts", gte=VALID_TS))
    if created_after is not None or created_before is not None:
        conditions.append(
            Between(
                "created_ts",
                gt=None if created_after is None else epoch(created_after),
                lt=None if created_before is None else epoch(created_before),
            )
        )
    conditions += [metadata_condition(key, value) for key, value in (metadata or {}).items()]
    return conditions


def metadata_condition(key: str, value: Any) -> Condition:
    path = metadata_path(key)
    if value is None:
        return IsNull(path)
    if isinstance(value, str | int | bool):
        return Match(path, value)
    if isinstance(value, float):
        return Between(path, gte=value, lte=value)
    raise ValueError(f"metadata filter {key!r}: only strings, numbers, booleans and null can be matched")


def metadata_path(key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"metadata.{key}"
    if '"' in key:
        raise ValueError(f"metadata filter key {key!r} cannot contain a double quote")
    # Quoting keeps a dot or space in the key from being read as a nested path.
    return f'metadata."{key}"'
