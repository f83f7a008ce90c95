"""An import's progress record in Redis, shared by the gateway (which creates it and counts what
it enqueued) and the worker (which counts what it applied), and the import's request ids.

One hash per import, ``{prefix}:import:<id>``, expiring IMPORT_TTL_S after its last change. It
holds counts and the SHA-1 of the import's scope (user and agent), never the user id in clear:
an erasure leaves nothing of the user in it, and a batch must name the scope again to add to it.
An import is erased when the user's erasure stamp (mnemo.user_order) is at or after its start:
every exchange it enqueued started then, so none of them is written any more.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mnemo.job_metrics import JobTotals
from mnemo.models import ID_NAMESPACE
from mnemo.prompts import DECISION_SYSTEM, EXTRACTION_SYSTEM

IMPORT_TTL_S = 30 * 24 * 3600  # as long as the enqueue remembers request ids (user_order.SEEN_TTL_MS)
IMPORT_MODEL = "mnemo-import"  # the Exchange's model for imported exchanges
# Counted by the gateway as it enqueues a batch, and by the worker as it applies one exchange.
GATEWAY_COUNTS = ("submitted", "queued", "duplicates", "refused")
WORKER_COUNTS = ("applied", "failed", "dropped", "memories")
CHARS_PER_TOKEN = 4  # the usual rough ratio for English text, for estimates only

# KEYS[1] the record; ARGV: ttl, then field/increment pairs. Adds only to a record that exists
# (an expired or unknown import is not brought back as a bare counter). Returns 1 or 0.
ADD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def import_key(prefix: str, import_id: str) -> str:
    return f"{prefix}:import:{import_id}"


def new_import_id() -> str:
    return f"imp_{uuid.uuid4().hex}"


def scope_hash(user_id: str, agent_id: str | None) -> str:
    return hashlib.sha1(f"{user_id}\x1f{agent_id or ''}".encode(), usedforsecurity=False).hexdigest()


def user_hash(user_id: str) -> str:
    """As the erasure stamp's key names the user (redis.sha1hex in mnemo.user_order)."""
    return hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()


def import_request_id(user_id: str, agent_id: str | None, conversation_id: str, exchange_id: str) -> str:
    """The request id of an imported exchange, from the file's own ids: a re-run (or a run resumed
    after a crash) enqueues the same ids, which the enqueue de-duplicates. The scope is part of it
    because every memory id derives from the request id: two users importing the same file must
    not write the same memory ids."""
    name = "\x1f".join(("import", user_id, agent_id or "", conversation_id, exchange_id))
    return f"imp_{uuid.uuid5(ID_NAMESPACE, name).hex}"


@dataclass(frozen=True)
class ImportRecord:
    id: str
    scope: str  # scope_hash of the user and agent
    user: str  # user_hash: where the erasure stamp is
    tenant: str  # the tenant whose key created it ("" for none): who may read it
    mode: str  # "raw", "llm" or "" (the worker's default)
    format: str
    started_ms: int
    counts: dict[str, int]
    input_done: bool
    erased: bool = False

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started_ms / 1000, UTC)

    @property
    def settled(self) -> int:
        return sum(self.counts.get(name, 0) for name in ("applied", "failed", "dropped"))

    @property
    def pending(self) -> int:
        return max(0, self.counts.get("queued", 0) - self.settled)

    @property
    def status(self) -> str:
        if self.erased:
            return "erased"
        if not self.input_done:
            return "receiving"
        return "applying" if self.pending else "done"

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "import",
            "id": self.id,
            "status": self.status,
            "mode": self.mode or None,
            "format": self.format,
            "started_at": self.started_at.isoformat(),
            "input_done": self.input_done,
            **{name: self.counts.get(name, 0) for name in (*GATEWAY_COUNTS, *WORKER_COUNTS)},
            "pending": self.pending,
        }


async def create_import(
    redis: Any,
    prefix: str,
    import_id: str,
    *,
    user_id: str,
    agent_id: str | None,
    tenant: str | None,
    mode: str | None,
    fmt: str,
    started_ms: int,
) -> None:
    fields = {
        "scope": scope_hash(user_id, agent_id),
        "user": user_hash(user_id),
        "tenant": tenant or "",
        "mode": mode or "",
        "format": fmt,
        "started_ms": str(started_ms),
        "input_done": "0",
        **{name: "0" for name in (*GATEWAY_COUNTS, *WORKER_COUNTS)},
    }
    key = import_key(prefix, import_id)
    await redis.hset(key, mapping=fields)
    await redis.expire(key, IMPORT_TTL_S)


async def add_counts(redis: Any, prefix: str, import_id: str, counts: dict[str, int]) -> bool:
    pairs = [part for name, value in counts.items() if value for part in (name, value)]
    return bool(await redis.eval(ADD_SCRIPT, 1, import_key(prefix, import_id), IMPORT_TTL_S, *pairs))


async def finish_input(redis: Any, prefix: str, import_id: str) -> None:
    key = import_key(prefix, import_id)
    if await redis.exists(key):
        await redis.hset(key, "input_done", "1")


async def read_import(redis: Any, prefix: str, import_id: str) -> ImportRecord | None:
    raw = await redis.hgetall(import_key(prefix, import_id))
    if not raw:
        return None
    data = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
    try:
        started_ms = int(data["started_ms"])
        counts = {name: int(data.get(name, 0)) for name in (*GATEWAY_COUNTS, *WORKER_COUNTS)}
    except (KeyError, ValueError):
        return None  # not a record this build wrote
    stamp = await redis.get(f"{prefix}:erased:{data.get('user', '')}")
    return ImportRecord(
        id=import_id,
        scope=data.get("scope", ""),
        user=data.get("user", ""),
        tenant=data.get("tenant", ""),
        mode=data.get("mode", ""),
        format=data.get("format", ""),
        started_ms=started_ms,
        counts=counts,
        input_done=data.get("input_done") == "1",
        erased=stamp is not None and int(stamp) >= started_ms,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def record_outcome(redis: Any, prefix: str, import_id: str, outcome: str, memories: int = 0) -> None:
    """The worker's side: one imported exchange applied, failed for good, or dropped (its user
    erased since the import started)."""
    counts = {outcome: 1, "memories": memories}
    await add_counts(redis, prefix, import_id, counts)


@dataclass(frozen=True)
class Estimate:
    """What an import would cost the extraction LLM, before anything is spent."""

    mode: str
    exchanges: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    embeddings: int  # texts embedded (raw mode: each user message; llm mode: each fact, about)
    basis: str

    def to_json(self) -> dict[str, Any]:
        return {"object": "import.estimate", **self.__dict__}


def estimate(mode: str, exchanges: int, characters: int, totals: JobTotals) -> Estimate:
    """From the worker's measured averages (mnemo.job_metrics totals) when it has applied jobs that
    called the LLM; else from the prompts' own size and the file's text (about 4 characters a
    token), counting one extraction call per exchange and a decision call for half of them."""
    if mode == "raw":
        return Estimate(mode, exchanges, 0, 0, 0, exchanges, "raw mode: each user message is stored as it is")
    calls = totals.counters.get("llm_calls", 0.0)
    applied = totals.jobs.get("applied", 0.0)
    if calls > 0 and applied > 0:
        per_job = calls / applied
        llm_calls = round(exchanges * per_job)
        prompt = round(llm_calls * totals.counters.get("prompt_tokens", 0.0) / calls)
        completion = round(llm_calls * totals.counters.get("completion_tokens", 0.0) / calls)
        created = totals.counters.get("memories_created", 0.0) / applied
        basis = f"the worker's averages over {int(applied)} applied exchanges ({per_job:.2f} LLM calls each)"
        return Estimate(mode, exchanges, llm_calls, prompt, completion, round(exchanges * created), basis)
    system = (len(EXTRACTION_SYSTEM) + len(DECISION_SYSTEM) // 2) // CHARS_PER_TOKEN
    llm_calls = exchanges + exchanges // 2
    prompt = exchanges * system + characters // CHARS_PER_TOKEN
    basis = "no measured extraction jobs yet: the prompts' size plus the file's text at ~4 characters a token"
    return Estimate(mode, exchanges, llm_calls, prompt, exchanges * 60, exchanges, basis)
