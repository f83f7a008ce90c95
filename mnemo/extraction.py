"""LLM fact extraction and update decisions, with strict parsing of what the model returns.

Existing memories are shown to the model under short integer ids (0, 1, 2...), never their
UUIDs, so it cannot invent or mistype an id; an unknown id makes the answer malformed.
Malformed answers are retried once, then the job fails without writing anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mnemo.errors import ExtractionError
from mnemo.llm import Completion, JsonLLM
from mnemo.messages import quote_text
from mnemo.models import Memory
from mnemo.prompts import DECISION_SYSTEM, EXTRACTION_SYSTEM
from mnemo.queue import Exchange, ExchangeMessage

logger = logging.getLogger(__name__)

MAX_FACT_CHARS = 1000
CONTEXT_MESSAGES = 4
# Each message (and the reply) is shown to the extraction model at most this long: a 9 MB paste
# must not become a 9 MB prompt (over any context window, so the job would fail, or very costly).
EXCERPT_MESSAGE_CHARS = 20_000

DecisionAction = Literal["ADD", "UPDATE", "DELETE", "NONE"]


class MalformedOutput(ExtractionError):
    pass


@dataclass(frozen=True)
class Decision:
    fact_index: int
    action: DecisionAction
    target: int | None  # index into the existing memories shown to the model
    text: str | None
    reason: str


@dataclass
class LLMUsage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens


def new_user_turn(messages: Sequence[ExchangeMessage]) -> list[ExchangeMessage]:
    """The user messages after the last assistant message: what this exchange added."""
    tail: list[ExchangeMessage] = []
    for message in reversed(messages):
        if message.role == "assistant":
            break
        if message.role == "user" and message.content.strip():
            tail.append(message)
    return list(reversed(tail))


def answered_message(messages: Sequence[ExchangeMessage], limit: int = 300) -> str | None:
    """The assistant message the new user turn answers ("Yes, last week!" needs it to be found)."""
    for message in reversed(messages):
        if message.role == "assistant" and message.content.strip():
            return " ".join(message.content.split())[:limit]
    return None


def render_excerpt(exchange: Exchange) -> str:
    """Recent context plus the new turn and the reply, each line a JSON string so that no
    message text can close the <conversation> delimiter."""
    history = [m for m in exchange.messages if m.role in ("user", "assistant") and m.content.strip()]
    lines = [f"{m.role}: {quote_text(m.content[:EXCERPT_MESSAGE_CHARS])}" for m in history[-CONTEXT_MESSAGES:]]
    lines.append(f"assistant: {quote_text(exchange.reply[:EXCERPT_MESSAGE_CHARS])}")
    when = exchange.completed_at.date().isoformat()
    return f"Conversation date: {when}\n<conversation>\n" + "\n".join(lines) + "\n</conversation>"


def render_decision_input(facts: Sequence[str], existing: Sequence[Memory]) -> str:
    payload = {
        "new_facts": [{"index": i, "text": fact} for i, fact in enumerate(facts)],
        "existing_memories": [{"id": i, "text": memory.text} for i, memory in enumerate(existing)],
    }
    return json.dumps(payload, ensure_ascii=False, indent=1)


def _load_object(text: str) -> dict[str, Any]:
    cleaned = text.strip()
    if cleaned.startswith("```"):  # models like to fence JSON even when told not to
        cleaned = cleaned.strip("`")
        cleaned = cleaned[4:] if cleaned[:4].lower() == "json" else cleaned
        cleaned = cleaned.strip()
    try:
        data = json.loads(cleaned)
    except ValueError as exc:
        raise MalformedOutput(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedOutput("expected a JSON object")
    return data


def parse_facts(text: str) -> list[str]:
    facts = _load_object(text).get("facts")
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
        raise MalformedOutput('expected {"facts": [strings]}')
    cleaned = [" ".join(f.split())[:MAX_FACT_CHARS] for f in facts]
    return list(dict.fromkeys(f for f in cleaned if f))


def parse_decisions(text: str, fact_count: int, existing_count: int) -> list[Decision]:
    rows = _load_object(text).get("decisions")
    if not isinstance(rows, list):
        raise MalformedOutput('expected {"decisions": [...]}')
    return [_parse_decision(row, fact_count, existing_count) for row in rows]


def _parse_decision(row: Any, fact_count: int, existing_count: int) -> Decision:
    if not isinstance(row, dict):
        raise MalformedOutput("each decision must be an object")
    raw_action = row.get("action")
    action = raw_action.upper() if isinstance(raw_action, str) else ""
    fact, target, text = row.get("fact"), row.get("id"), row.get("text")
    if action not in ("ADD", "UPDATE", "DELETE", "NONE"):
        raise MalformedOutput(f"unknown action {action!r}")
    if isinstance(fact, bool) or not isinstance(fact, int) or not 0 <= fact < fact_count:
        raise MalformedOutput(f"fact index {fact!r} is not one of the new facts")
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target)
    if isinstance(target, bool) or action == "ADD":
        target = None  # an ADD replaces nothing, whatever id the model mentions
    if action in ("UPDATE", "DELETE") and not (isinstance(target, int) and 0 <= target < existing_count):
        raise MalformedOutput(f"{action} names id {target!r}, which is not an existing memory")
    if action in ("ADD", "UPDATE") and not (isinstance(text, str) and text.strip()):
        raise MalformedOutput(f"{action} needs a text")
    return Decision(
        fact_index=fact,
        action=action,  # type: ignore[arg-type]  # checked against the literal above
        target=target if isinstance(target, int) and 0 <= target < existing_count else None,
        text=" ".join(text.split())[:MAX_FACT_CHARS] if isinstance(text, str) else None,
        reason=str(row.get("reason") or "")[:500],
    )


class Extractor:
    def __init__(self, llm: JsonLLM) -> None:
        self.llm = llm

    @property
    def model(self) -> str:
        return self.llm.model

    async def extract(self, exchange: Exchange, usage: LLMUsage) -> list[str]:
        facts: list[str] = await self._ask(EXTRACTION_SYSTEM, render_excerpt(exchange), parse_facts, usage)
        return facts

    async def decide(self, facts: Sequence[str], existing: Sequence[Memory], usage: LLMUsage) -> list[Decision]:
        def parse(text: str) -> list[Decision]:
            return parse_decisions(text, len(facts), len(existing))

        decisions: list[Decision] = await self._ask(
            DECISION_SYSTEM, render_decision_input(facts, existing), parse, usage
        )
        return decisions

    async def _ask(self, system: str, user: str, parse: Any, usage: LLMUsage) -> Any:
        for attempt in (1, 2):
            completion = await self.llm.complete(system, user)
            usage.add(completion)
            try:
                return parse(completion.text)
            except MalformedOutput as exc:
                logger.warning("extraction LLM answered malformed output (attempt %d): %s", attempt, exc)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
