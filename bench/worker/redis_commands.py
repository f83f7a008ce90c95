"""Redis commands per exchange, from ``INFO commandstats`` call counts read before and after a
measured run (bench-side; nothing in the packages changes).

Redis counts every command it runs, those a Lua script runs included (an enqueue script of ten
calls counts eleven: the EVAL and its ten), so the total is the work Redis does per exchange,
and the EVAL/EVALSHA calls alone are the scripts' round trips. Read on the embedded Redis a run
owns; on a shared server the counts include every other client's commands.
"""

from __future__ import annotations

from typing import Any

# The snapshots' own INFO calls, and CONFIG (none in the runs; a caller's resetstat) are not the
# run's work.
NOT_THE_RUN = frozenset({"info", "config"})
SCRIPTS = frozenset({"eval", "evalsha"})
TOP = 8


async def snapshot(redis: Any) -> dict[str, int]:
    """Calls per command so far (lower-case names, e.g. ``zadd``), from an async client."""
    return calls(await redis.info("commandstats"))


def calls(info: dict[str, Any]) -> dict[str, int]:
    """Calls per command in redis-py's parsed ``INFO commandstats``."""
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    calls = {name: after[name] - before.get(name, 0) for name in after if name not in NOT_THE_RUN}
    return {name: count for name, count in calls.items() if count > 0}


def per_exchange(calls: dict[str, int], exchanges: int) -> dict[str, Any]:
    """Totals per exchange and the most called commands."""
    count = max(1, exchanges)
    total = sum(calls.values())
    scripts = sum(n for name, n in calls.items() if name in SCRIPTS)
    ranked = sorted(calls.items(), key=lambda item: (-item[1], item[0]))
    return {
        "calls": total,
        "per_exchange": round(total / count, 2),
        "scripts_per_exchange": round(scripts / count, 2),
        "top": {name: round(n / count, 2) for name, n in ranked[:TOP]},
        "all": dict(ranked),  # raw call counts, every command
    }


def summarise(start: dict[str, int], enqueued: dict[str, int], end: dict[str, int], exchanges: int) -> dict[str, Any]:
    """The enqueue (what a gateway sends), the worker's run, and both together."""
    return {
        "enqueue": per_exchange(delta(start, enqueued), exchanges),
        "worker": per_exchange(delta(enqueued, end), exchanges),
        "total": per_exchange(delta(start, end), exchanges),
    }


def sentence(redis: dict[str, Any]) -> str:
    """One line for a results page."""
    total = redis["total"]
    top = ", ".join(f"{name} {n}" for name, n in total["top"].items())
    line = f"{total['per_exchange']} Redis commands per exchange"
    if "enqueue" in redis:
        line += f" (enqueue {redis['enqueue']['per_exchange']}, worker {redis['worker']['per_exchange']})"
    return f"{line}, {total['scripts_per_exchange']} of them scripts (EVAL/EVALSHA); most called: {top}"
