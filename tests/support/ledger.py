"""Counting what Mnemo stored against what was sent, straight from the store: memories and
events per request id, and the sent/stored/duplicated/lost tally the fault tests assert on.

Read through a running MnemoThread's core (``thread_tally``) or by opening the data directory
of a stopped ``mnemo up`` (``data_dir_tally``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mnemo.config import Settings
from mnemo.models import Memory, MemoryEvent, Scope
from mnemo.runtime import Core, open_core
from tests.support.servers import MnemoThread

LIST_LIMIT = 10_000


@dataclass(frozen=True)
class Tally:
    sent: int
    stored: int  # request ids that created at least one memory
    duplicated: int  # memories or events beyond the first per (request id, text)
    lost: int  # request ids sent that created nothing

    @property
    def exact(self) -> bool:
        return self.stored == self.sent and self.duplicated == 0 and self.lost == 0


def count(sent: dict[str, str], memories: Iterable[Memory], events: Iterable[MemoryEvent]) -> Tally:
    """``sent`` maps each request id to its user; each exchange should have made one memory."""
    memory_list, event_list = list(memories), list(events)
    per_request = Counter(m.source_request_id for m in memory_list)
    memory_twins = Counter((m.source_request_id, m.text) for m in memory_list)
    event_twins = Counter((e.source_request_id, e.action, e.new_text) for e in event_list)
    duplicated = sum(n - 1 for n in memory_twins.values()) + sum(n - 1 for n in event_twins.values())
    stored = sum(1 for request_id in sent if per_request[request_id] > 0)
    return Tally(sent=len(sent), stored=stored, duplicated=duplicated, lost=len(sent) - stored)


async def read_users(core: Core, users: Iterable[str]) -> tuple[list[Memory], list[MemoryEvent]]:
    memories: list[Memory] = []
    events: list[MemoryEvent] = []
    for user in sorted(set(users)):
        memories += await core.store.list(Scope(user_id=user), include_invalidated=True, limit=LIST_LIMIT)
        events += await core.store.list_events(user)
    return memories, events


async def core_tally(core: Core, sent: dict[str, str]) -> Tally:
    return count(sent, *await read_users(core, sent.values()))


def thread_tally(mnemo: MnemoThread, sent: dict[str, str]) -> Tally:
    return mnemo.call(lambda core: core_tally(core, sent))


def data_dir_tally(settings: Settings, sent: dict[str, str]) -> tuple[Tally, list[Memory], list[MemoryEvent]]:
    """Open the store of a stopped Mnemo (the embedded store allows one process at a time)."""

    async def read() -> tuple[Tally, list[Memory], list[MemoryEvent]]:
        core = await open_core(settings)
        try:
            memories, events = await read_users(core, sent.values())
        finally:
            await core.close()
        return count(sent, memories, events), memories, events

    return asyncio.run(read())
