"""Listing a store's users, shared by both backends: which ids a listing under a prefix holds,
and what each user's row says. Each backend counts with its own facets and reads the
first and last activity of a page's users with its own ordered queries.

The store holds no table of users: a user is an id that memories or events carry, so the
listing is the union of both collections' ``user_id`` facets. Ids are listed in id order (stable
paging, and a prefix search reads as an index) rather than by activity, because activity is read
per user and only for the page's users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# A tenant's users are stored as ``<tenant>/<id>`` (gateway.access): a listing under a prefix
# shows the ids directly under it, never another namespace's (``a`` does not list ``acme/bob``).
NAMESPACE_SEPARATOR = "/"
# The most distinct ids one facet reads. Qdrant's facet keeps the ids with the most points, not
# the first by id, so past it a listing misses some users: it says so (``complete``), and a
# longer prefix lists them.
USER_SCAN_LIMIT = 100_000


@dataclass(frozen=True)
class UserCounts:
    """Facet counts by stored user id: every memory (invalidated versions too), the current
    ones, and events."""

    memories: Mapping[str, int]
    current: Mapping[str, int]
    events: Mapping[str, int]


@dataclass(frozen=True)
class UserSummary:
    user_id: str  # as stored (a tenant's users with their prefix)
    memories: int  # current memories: what retrieval can inject
    total_memories: int  # every version kept, invalidated ones included
    events: int
    first_activity: datetime | None  # the oldest memory or event
    last_activity: datetime | None  # the newest memory or event


@dataclass(frozen=True)
class UserListing:
    users: list[UserSummary]  # the page
    total: int  # ids under the prefix
    complete: bool  # False when a facet reached USER_SCAN_LIMIT: some ids may be missing


def listed_ids(prefix: str, counts: UserCounts) -> list[str]:
    """The ids under ``prefix`` (and not in a namespace below it) that hold anything, by id."""
    # Qdrant Edge's exact facet still names a value whose points were all deleted, with count 0.
    found = {user for facet in (counts.memories, counts.events) for user, count in facet.items() if count > 0}
    return sorted(user for user in found if user.startswith(prefix) and NAMESPACE_SEPARATOR not in user[len(prefix) :])


def is_complete(counts: UserCounts) -> bool:
    return all(len(facet) < USER_SCAN_LIMIT for facet in (counts.memories, counts.current, counts.events))


def moment(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def summary(user_id: str, counts: UserCounts, stamps: Iterable[float | None]) -> UserSummary:
    """A user's row; ``stamps`` are the epoch seconds of their oldest and newest memory and event
    (None where they hold none)."""
    known = [stamp for stamp in stamps if stamp is not None]
    return UserSummary(
        user_id=user_id,
        memories=counts.current.get(user_id, 0),
        total_memories=counts.memories.get(user_id, 0),
        events=counts.events.get(user_id, 0),
        first_activity=moment(min(known)) if known else None,
        last_activity=moment(max(known)) if known else None,
    )
