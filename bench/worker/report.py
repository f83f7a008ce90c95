"""Goals and the Markdown table of bench/worker."""

from __future__ import annotations

from typing import Any

from bench import stats
from bench.worker import redis_commands

GOAL_OWN_MS = 5.0
GOAL_CALLS = 2.0
GOAL_TOKEN_RATIO = 0.5


def per_exchange(run: dict[str, Any]) -> dict[str, float]:
    tokens, count = run["tokens"], run["exchanges"]
    return {
        "llm_calls": round(tokens["calls"] / count, 3),
        "prompt_tokens": round(tokens["prompt_tokens"] / count, 1),
        "completion_tokens": round(tokens["completion_tokens"] / count, 1),
    }


def goals(measured: dict[str, Any]) -> list[dict[str, Any]]:
    mine = measured["mnemo_sequential"]
    ours = per_exchange(mine)
    checks = [
        {
            "goal": f"Mnemo's own time per exchange <= {GOAL_OWN_MS} ms (apply time minus LLM call time)",
            "mnemo": mine["own_ms_per_exchange"],
            "ratio": stats.ratio(mine["own_ms_per_exchange"], GOAL_OWN_MS),
            "met": mine["own_ms_per_exchange"] <= GOAL_OWN_MS,
        },
        {
            "goal": f"LLM calls per exchange <= {GOAL_CALLS:g}",
            "mnemo": ours["llm_calls"],
            "ratio": stats.ratio(ours["llm_calls"], GOAL_CALLS),
            "met": ours["llm_calls"] <= GOAL_CALLS,
        },
    ]
    if measured.get("mem0"):
        theirs = per_exchange(measured["mem0"])
        value = stats.ratio(ours["prompt_tokens"], theirs["prompt_tokens"])
        checks.append(
            {
                "goal": f"prompt tokens per exchange <= {GOAL_TOKEN_RATIO} x Mem0's",
                "mnemo": ours["prompt_tokens"],
                "mem0": theirs["prompt_tokens"],
                "ratio": value,
                "met": value is not None and value <= GOAL_TOKEN_RATIO,
            }
        )
    return checks


def build(
    measured: dict[str, Any], setup: dict[str, Any], start: dict[str, Any], end: dict[str, Any]
) -> dict[str, Any]:
    return {
        "bench": "worker",
        "machine_start": start,
        "machine_end": end,
        "setup": setup,
        **measured,
        "goals": goals(measured),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Worker cost",
        "",
        stats.machine_sentence(result) + " "
        "An instant scripted LLM; tokens counted "
        "with litellm's tokenizer (gpt-4o-mini encoding) on what the LLM received and answered. "
        "Apply time: each exchange's `MemoryWriter.process` (timed bench-side). Redis commands: "
        "`INFO commandstats` calls, those inside Lua scripts included, from before the enqueue to the "
        "end of the worker's run.",
        "",
        "| run | exchanges | exchanges/s | apply p50 ms | own ms/exchange | process CPU ms/exchange | LLM ms/call "
        "| LLM calls/exchange | prompt tokens/exchange | completion tokens/exchange | Redis commands/exchange "
        "| Redis CPU ms/exchange |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = (
        ("mnemo_sequential", "Mnemo, max_jobs=1"),
        ("mnemo_via_litellm", "Mnemo, max_jobs=1, extraction through litellm"),
        ("mnemo_concurrent", "Mnemo, max_jobs=8"),
    )
    for name, label in runs:
        run = result.get(name)
        if not run:
            continue
        each = per_exchange(run)
        llm_ms = run["llm_ms_total"] / max(1, run["llm_calls"])
        lines.append(
            f"| {label} | {run['exchanges']} | {run['exchanges_per_s']} | {run['job_ms']['p50']} | "
            f"{run['own_ms_per_exchange']} | {run['process_cpu_ms_per_exchange']} | {llm_ms:.2f} | "
            f"{each['llm_calls']} | {each['prompt_tokens']} | {each['completion_tokens']} | "
            f"{run['redis_commands']['total']['per_exchange']} | {run.get('redis_cpu_ms_per_exchange', '')} |"
        )
    if result.get("mem0"):
        run = result["mem0"]
        each = per_exchange(run)
        rate = round(1000 / run["add_ms"]["mean"], 1) if run["add_ms"]["mean"] else ""
        lines.append(
            f"| Mem0 {run['mem0_version']} add(infer=True) | {run['exchanges']} | {rate} | {run['add_ms']['p50']} "
            f"| | | | {each['llm_calls']} | {each['prompt_tokens']} | {each['completion_tokens']} | | |"
        )
    sequential = result["mnemo_sequential"]
    lines += [
        "",
        f"Facts extracted: {sequential['facts']}, of which {sequential.get('restated', 0)} restated a memory the "
        f"user already held word for word (not embedded, not sent to the decision call); "
        f"{sequential['created']} memories created.",
    ]
    lines.append("")
    for name, label in (("mnemo_sequential", "max_jobs=1"), ("mnemo_concurrent", "max_jobs=8")):
        if result.get(name):
            lines.append(f"Redis, {label}: {redis_commands.sentence(result[name]['redis_commands'])}.")
    stages = sequential.get("stage_ms_per_exchange", {})
    if stages:
        lines += [
            "",
            "Where a sequential job's wall time goes, ms per exchange: "
            + ", ".join(f"{key} {value}" for key, value in stages.items())
            + ".",
        ]
    lines += ["", "## Goals", "", "| goal | Mnemo | Mem0 | ratio | met |", "|---|---|---|---|---|"]
    for check in result["goals"]:
        lines.append(
            f"| {check['goal']} | {check['mnemo']} | {check.get('mem0', '')} | {check['ratio']} | "
            f"{'yes' if check['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"
