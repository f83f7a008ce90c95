"""Finding a request's memories, and saying whether memory was used: ``X-Mnemo-Memory-Status``
lets a client tell "no memories" (``ok`` with ``X-Mnemo-Memories: 0``) from "memory unavailable"
(``skipped:<reason>``) and from "not asked for" (``off``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.identity import MemoryContext
from gateway.injection import select_memories
from gateway.services import Services
from mnemo.messages import build_query
from mnemo.models import ScoredMemory
from mnemo.retrieval import OVERLOADED, STALLED, Budget

STATUS_HEADER = "x-mnemo-memory-status"
# Retrieval's failure (a dependency that stalled, overload, or the exception's type name) as the
# header names it: a small fixed set, so the status is also a bounded metric label.
SKIP_REASONS = {
    STALLED: "timeout",
    OVERLOADED: "overloaded",
    "EmbedderError": "embedder_error",
    "StoreError": "store_error",
    "StoreMismatchError": "store_error",
}


@dataclass(frozen=True)
class Recall:
    memories: list[ScoredMemory] = field(default_factory=list)
    status: str = "off"  # "ok" | "off" | "skipped:<reason>"


def skipped(failure: str) -> str:
    return "skipped:" + SKIP_REASONS.get(failure, "error")


async def recall(services: Services, context: MemoryContext, messages: list[Any]) -> Recall:
    """The memories to inject for the conversation's latest user turn (chat-style ``messages``)."""
    if not context.reads or context.scope is None:
        return Recall()
    memory = services.settings.memory
    query = build_query(messages, memory.query_context_messages, memory.query_short_chars)
    retrieval = await services.retriever.retrieve(
        context.scope,
        query,
        limit=memory.top_k,
        threshold=memory.score_threshold,
        budget=Budget(
            stall_s=memory.retrieval_timeout_ms / 1000,
            ceiling_s=max(memory.retrieval_ceiling_ms, memory.retrieval_timeout_ms) / 1000,
        ),
    )
    if retrieval.failure:
        services.metrics.inc("mnemo_retrieval_fail_open_total", reason=retrieval.failure)
    selected = select_memories(retrieval.memories, memory.token_budget, services.count_tokens)
    services.metrics.observe_retrieval(retrieval.elapsed_ms, len(selected))
    return Recall(selected, skipped(retrieval.failure) if retrieval.failure else "ok")


def mnemo_headers(context: MemoryContext, found: Recall) -> dict[str, str]:
    return {
        "x-mnemo-request-id": context.request_id,
        "x-mnemo-memories": str(len(found.memories)),
        "x-mnemo-memory-ids": ",".join(hit.memory.id for hit in found.memories),
        STATUS_HEADER: found.status,
    }
