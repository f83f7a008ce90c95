"""Turn one completed exchange into memory changes: facts in, versioned memories and events out.

Every id written here is derived from the exchange's request id, so running the same
exchange twice writes the same points and events instead of duplicates.

What one exchange can write is bounded (``limits`` settings): at most so many memories per
exchange, each raw memory at most so long, and at most so many per user per minute
(mnemo.write_quota). The excess is skipped, never an error: the chat was answered long ago,
and failing the job would only retry it. Each skip is logged and counted in the worker metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mnemo.config import LimitSettings
from mnemo.embedding import Embedder
from mnemo.extraction import Decision, Extractor, LLMUsage, answered_message, new_user_turn
from mnemo.job_metrics import record_skipped
from mnemo.memory_line import count_lines
from mnemo.models import Memory, MemoryEvent, Scope, derived_id, text_hash
from mnemo.queue import Exchange
from mnemo.raw_filter import RawFilter
from mnemo.raw_filter import keep as keep_raw
from mnemo.retention import RetentionPolicy
from mnemo.store import MemoryStore
from mnemo.store.keywords import context_line
from mnemo.write_quota import WriteQuota

logger = logging.getLogger(__name__)

RAW_MODEL = "raw"


@dataclass
class IngestResult:
    mode: Literal["raw", "llm"]
    facts: int = 0
    restated: int = 0  # facts the user's memory already held word for word
    created: list[str] = field(default_factory=list)
    invalidated: list[str] = field(default_factory=list)
    usage: LLMUsage = field(default_factory=LLMUsage)
    skipped: dict[str, int] = field(default_factory=dict)  # memories not written, by reason
    truncated: int = 0  # raw memories stored cut to limits.max_memory_chars

    def skip(self, reason: str, count: int) -> None:
        if count > 0:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


class MemoryWriter:
    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder,
        extractor: Extractor | None,
        default_mode: Literal["raw", "llm"],
        similar_limit: int = 5,
        *,
        limits: LimitSettings | None = None,
        redis: Any = None,
        queue_name: str = "",
        retention: RetentionPolicy | None = None,
        raw_filter: RawFilter = "statements",
    ) -> None:
        """``redis`` (the worker's) holds the per-user write quota and the skip counters of
        ``queue_name``'s metrics; without it (unit tests) there is no per-user quota. ``retention``
        stamps each new memory's expiry (none without it, unless the exchange asks for one).
        ``raw_filter`` picks the raw-mode messages worth a memory (mnemo.raw_filter)."""
        self.store = store
        self.embedder = embedder
        self.extractor = extractor
        self.default_mode = default_mode
        self.similar_limit = similar_limit
        self.limits = limits or LimitSettings()
        self.redis = redis
        self.queue_name = queue_name
        self.quota = WriteQuota(redis, self.limits.memories_per_user_per_minute) if redis is not None else None
        self.retention = retention or RetentionPolicy()
        self.raw_filter = raw_filter

    def mode_for(self, exchange: Exchange) -> Literal["raw", "llm"]:
        mode = exchange.extraction_mode or self.default_mode
        if mode == "llm" and self.extractor is None:
            logger.warning("request %s asked for llm extraction but none is configured; using raw", exchange.request_id)
            return "raw"
        return mode

    async def process(self, exchange: Exchange) -> IngestResult:
        result = IngestResult(mode=self.mode_for(exchange))
        await self._process(exchange, result)
        # Reported once the job went through: a try that fails is retried and skips again.
        await self._report_skips(exchange, result)
        return result

    async def _process(self, exchange: Exchange, result: IngestResult) -> None:
        if result.mode == "llm" and self.extractor is not None:
            facts = _unique(await self.extractor.extract(exchange, result.usage))
            facts = self._capped(result, facts, self.limits.max_facts_per_exchange, keep="first")
        else:
            facts = _unique([m.content.strip() for m in new_user_turn(exchange.messages)])
            # Questions and small talk are not memories: "What is my dog called?" would be injected
            # beside the answer later. Filtered before the cap, so they never crowd out a statement.
            facts = keep_raw(facts, self.raw_filter)
            # What is new in this exchange, but never unbounded: a client replaying a transcript as
            # thousands of user messages gets its newest ones (the nearest the reply) remembered.
            facts = self._capped(result, facts, self.limits.max_memories_per_exchange, keep="last")
            facts = _unique(self._cut(result, facts))
            exchange = with_reply_context(exchange)
        result.facts = len(facts)
        facts = await self._not_yet_known(exchange, facts, result.mode)
        result.restated = result.facts - len(facts)
        if facts and result.mode == "raw":
            # Each raw fact is one new memory: take the quota before paying for the embeddings.
            granted = await self._take_quota(exchange, len(facts))
            result.skip("rate_limited", len(facts) - granted)
            facts = facts[len(facts) - granted :]
        if not facts:
            return
        vectors = await self.embedder.embed([_indexed(exchange, fact) for fact in facts], background=True)
        existing = await self._similar(exchange.scope, vectors) if result.mode == "llm" else []
        decisions = await self._decide(result, facts, existing)
        dropped = await self._over_budget(exchange, result, decisions, existing) if result.mode == "llm" else set()
        await self._apply(exchange, result, facts, vectors, existing, decisions, dropped)

    def _capped(self, result: IngestResult, facts: list[str], limit: int, keep: Literal["first", "last"]) -> list[str]:
        result.skip("per_exchange", len(facts) - limit)
        if len(facts) <= limit:
            return facts
        return facts[:limit] if keep == "first" else facts[len(facts) - limit :]

    def _cut(self, result: IngestResult, facts: list[str]) -> list[str]:
        """Raw memories at most ``max_memory_chars`` long: a 9 MB message is kept as its start,
        not as one 9 MB memory to embed, index and inject (the start says what it is about)."""
        limit = self.limits.max_memory_chars
        result.truncated += sum(1 for fact in facts if len(fact) > limit)
        return [fact if len(fact) <= limit else fact[:limit].rstrip() for fact in facts]

    async def _take_quota(self, exchange: Exchange, wanted: int) -> int:
        """How many of ``wanted`` new memories the user's per-minute quota allows. The window is
        the minute the exchange completed; a retried job is granted what its first try was."""
        if self.quota is None:
            return wanted
        scope, at = exchange.scope, exchange.completed_at
        return await self.quota.take(scope.user_id, wanted, at, request_id=exchange.request_id)

    async def _over_budget(
        self, exchange: Exchange, result: IngestResult, decisions: list[Decision], existing: list[Memory]
    ) -> set[int]:
        """The decisions (by index) whose new memory is not written: past the per-exchange cap
        (a model may answer many ADDs for one fact), then past the user's quota."""
        writes = [
            number
            for number, decision in enumerate(decisions)
            if decision.action in ("ADD", "UPDATE")
            and decision.text
            and not _own_earlier_write(exchange, existing, decision)
        ]
        allowed = writes[: self.limits.max_memories_per_exchange]
        result.skip("per_exchange", len(writes) - len(allowed))
        granted = await self._take_quota(exchange, len(allowed)) if allowed else 0
        result.skip("rate_limited", len(allowed) - granted)
        return set(writes) - set(allowed[:granted])

    async def _report_skips(self, exchange: Exchange, result: IngestResult) -> None:
        if not result.skipped and not result.truncated:
            return
        logger.warning(
            "exchange %s: %s; %d truncated to limits.max_memory_chars=%d",
            exchange.request_id,
            ", ".join(f"{count} memories skipped ({reason})" for reason, count in sorted(result.skipped.items()))
            or "nothing skipped",
            result.truncated,
            self.limits.max_memory_chars,
        )
        if self.redis is not None:
            await record_skipped(self.redis, self.queue_name, result.skipped, result.truncated)

    async def _not_yet_known(self, exchange: Exchange, facts: list[str], mode: Literal["raw", "llm"]) -> list[str]:
        """The facts that are not, word for word (up to case and spacing), a memory the user already
        holds. Users restate what they said before; such a fact changes nothing, so it costs one
        indexed lookup instead of its embedding, a search and a place in the decision prompt, for a
        user with ten memories or ten thousand. In llm mode the memories this exchange wrote itself
        (a replayed job) do not count: the replay redoes its decisions, so a crash between writing
        an update and invalidating what it replaces heals. A raw exchange only ever adds, so its
        own earlier writes are complete and count like any other."""
        if not facts:
            return facts
        known = {
            text_hash(memory.text)
            for memory in await self.store.find_texts(exchange.scope, facts)
            if mode == "raw" or memory.source_request_id != exchange.request_id
        }
        return [fact for fact in facts if text_hash(fact) not in known]

    async def _similar(self, scope: Scope, vectors: Sequence[Sequence[float]]) -> list[Memory]:
        found: dict[str, Memory] = {}
        for vector in vectors:
            for hit in await self.store.search(scope, vector, limit=self.similar_limit):
                found.setdefault(hit.memory.id, hit.memory)
        return list(found.values())

    async def _decide(self, result: IngestResult, facts: list[str], existing: list[Memory]) -> list[Decision]:
        if result.mode == "llm" and existing and self.extractor is not None:
            return await self.extractor.decide(facts, existing, result.usage)
        # Raw mode (and nothing similar stored) needs no LLM: restatements are already gone.
        return [Decision(index, "ADD", None, fact, "new information") for index, fact in enumerate(facts)]

    async def _apply(
        self,
        exchange: Exchange,
        result: IngestResult,
        facts: list[str],
        vectors: list[list[float]],
        existing: list[Memory],
        decisions: list[Decision],
        dropped: set[int],
    ) -> None:
        model = self.extractor.model if result.mode == "llm" and self.extractor else RAW_MODEL
        at = exchange.completed_at
        # From when it was said: imported history past its TTL expires at once (mnemo.retention).
        expires_at = self.retention.expires_at(exchange.scope, exchange.metadata, at, exchange.expires_at)
        new_memories: list[Memory] = []
        events: list[MemoryEvent] = []
        invalidations: list[tuple[Memory, str | None]] = []
        line_tokens = await count_lines(d.text for d in decisions if d.action in ("ADD", "UPDATE") and d.text)
        for number, decision in enumerate(decisions):
            key = (exchange.request_id, str(number))
            old = existing[decision.target] if decision.target is not None else None
            if number in dropped or _own_earlier_write(exchange, existing, decision):
                continue  # over the limits, or a replayed job seeing its own earlier write (already applied)
            if decision.action in ("ADD", "UPDATE") and decision.text:
                memory_id, tokens = derived_id(*key, "memory"), line_tokens[decision.text]
                memory = _new_memory(exchange, memory_id, decision.text, tokens, at, old, expires_at)
                new_memories.append(memory)
                if old is not None:
                    invalidations.append((old, memory.id))
                events.append(_event(exchange, key, decision, memory.id, old, model, at))
            elif decision.action == "DELETE" and old is not None:
                invalidations.append((old, None))
                events.append(_event(exchange, key, decision, old.id, old, model, at))
        if new_memories:
            texts = [m.text for m in new_memories]
            known = dict(zip(facts, vectors, strict=True))
            missing = [t for t in texts if t not in known]  # an UPDATE may reword its fact
            if missing:
                indexed = [_indexed(exchange, t) for t in missing]
                known.update(zip(missing, await self.embedder.embed(indexed, background=True), strict=True))
            await self.store.upsert(new_memories, [known[t] for t in texts])
        for old, successor in invalidations:
            await self.store.invalidate(old.id, at, successor)
        await self.store.add_events(events)
        result.created = [m.id for m in new_memories]
        result.invalidated = [old.id for old, _ in invalidations]


def _unique(facts: list[str]) -> list[str]:
    """Non-empty facts, each once (up to case and spacing), in order."""
    unique: dict[str, str] = {}
    for fact in facts:
        if fact:
            unique.setdefault(text_hash(fact), fact)
    return list(unique.values())


def _own_earlier_write(exchange: Exchange, existing: list[Memory], decision: Decision) -> bool:
    old = existing[decision.target] if decision.target is not None else None
    return old is not None and old.source_request_id == exchange.request_id


def with_reply_context(exchange: Exchange) -> Exchange:
    """Raw memories keep the assistant message they answer as ``metadata.reply_to`` (indexed
    with them, see mnemo.store.keywords), unless the caller already set one."""
    if "reply_to" in exchange.metadata:
        return exchange
    answered = answered_message(exchange.messages)
    if answered is None:
        return exchange
    return exchange.model_copy(update={"metadata": {**exchange.metadata, "reply_to": answered}})


def _indexed(exchange: Exchange, text: str) -> str:
    # Embedded with who said it and when, as the keyword side indexes it (mnemo.store.keywords).
    return context_line(text, exchange.completed_at, exchange.metadata)


def _new_memory(
    exchange: Exchange,
    memory_id: str,
    text: str,
    line_tokens: int | None,
    at: datetime,
    old: Memory | None,
    expires_at: datetime | None,
) -> Memory:
    scope = exchange.scope
    return Memory(
        id=memory_id,
        text=text,
        line_tokens=line_tokens,
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        session_id=scope.session_id,
        created_at=at,
        supersedes=old.id if old else None,
        version=old.version + 1 if old else 1,
        source_request_id=exchange.request_id,
        actor="worker",
        metadata=dict(exchange.metadata),
        expires_at=expires_at,
    )


def _event(
    exchange: Exchange,
    key: tuple[str, str],
    decision: Decision,
    memory_id: str,
    old: Memory | None,
    model: str,
    at: datetime,
) -> MemoryEvent:
    return MemoryEvent(
        id=derived_id(*key, "event"),
        memory_id=memory_id,
        user_id=exchange.scope.user_id,
        agent_id=exchange.scope.agent_id,
        action=decision.action,
        previous_memory_id=old.id if old and decision.action == "UPDATE" else None,
        old_text=old.text if old else None,
        new_text=decision.text,
        reason=decision.reason,
        source_request_id=exchange.request_id,
        model=model,
        actor="worker",
        created_at=at,
    )
