"""bench/overhead/idle: how much of what Mnemo adds at concurrency 1 is the host waking idle vCPUs.

    .venv/bin/python -m bench.overhead.idle [--rounds 4] [--requests 300]

A chat at concurrency 1 is a chain of short waits: the event loop waits for the query thread, the
upstream and Redis. On a virtual machine whose idle vCPUs halt at once (a guest with halt polling
off), whatever runs after each wait runs cold, several times slower. Each round measures the
direct upstream, Mnemo with memory off and with memory read twice, in alternating order: as the
machine is, and with one busy loop per CPU at the lowest priority (``nice 19``), which yields to
every other process but keeps the vCPUs from halting. The difference is what the host's idle path
costs a chat. Writes bench/results/idle.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import facts, stats
from bench.overhead import targets
from bench.overhead.load import Target, new_client, run_block
from bench.overhead.run import RESULTS, USER, bodies, seed_memories, wait_for_queue

logger = logging.getLogger("bench.overhead.idle")

VARIANTS = ("as is", "vCPUs kept busy")
SPIN = "while True: pass"


@contextmanager
def busy_vcpus(on: bool) -> Iterator[None]:
    """One lowest-priority busy loop per CPU while the block runs (nothing when ``on`` is False)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.nice(19))
        for _ in range((os.cpu_count() or 1) if on else 0)
    ]
    try:
        time.sleep(0.3 if on else 0)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def mnemo_headers(mode: str) -> dict[str, str]:
    return {"authorization": "Bearer sk-client", "x-mnemo-user-id": USER, "x-mnemo-memory": mode}


async def run_rounds(args: argparse.Namespace, upstream: str, mnemo: str) -> list[dict[str, Any]]:
    questions = iter(facts.unique_questions(1_000_000))
    plan = [Target("direct", upstream + "/v1", {"authorization": "Bearer sk-up"})] + [
        Target(f"mnemo-{mode}", mnemo + "/v1", mnemo_headers(mode)) for mode in args.modes
    ]
    async with new_client(1) as client:
        for target in plan:  # warm-up
            await run_block(client, target, bodies(False, questions), 40, 1)
    records: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
            with busy_vcpus(variant != VARIANTS[0]):
                async with new_client(1) as client:
                    for target in plan:
                        block = await run_block(client, target, bodies(False, questions), args.requests, 1)
                        p50 = stats.summary(block.total_ms)["p50"]
                        records.append({"round": round_, "variant": variant, "target": target.name, "p50": p50})
                        if target.name == "mnemo-on":
                            wait_for_queue(mnemo)  # the worker's backlog must not run into the next block
            logger.info("round %d %s: %s", round_, variant, [r["p50"] for r in records[-len(plan) :]])
    return records


def summarise(records: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Per Mnemo target: median added p50 (target minus direct, same round and variant) per variant."""
    added: dict[tuple[str, str], list[float]] = {}
    direct = {(r["round"], r["variant"]): r["p50"] for r in records if r["target"] == "direct"}
    for r in records:
        if r["target"] != "direct":
            added.setdefault((r["target"], r["variant"]), []).append(r["p50"] - direct[(r["round"], r["variant"])])
    rows = []
    for name in names:
        as_is, busy = added[(name, VARIANTS[0])], added[(name, VARIANTS[1])]
        rows.append(
            {
                "target": name,
                "added_as_is_ms": round(statistics.median(as_is), 2),
                "added_busy_ms": round(statistics.median(busy), 2),
                "rounds_lower_when_busy": sum(b < a for a, b in zip(as_is, busy, strict=True)),
                "rounds": len(as_is),
            }
        )
    as_is_p50, busy_p50 = (statistics.median(p for (_, var), p in direct.items() if var == v) for v in VARIANTS)
    return [*rows, {"target": "direct", "p50_as_is_ms": round(as_is_p50, 3), "p50_busy_ms": round(busy_p50, 3)}]


def markdown(result: dict[str, Any]) -> str:
    rows = [r for r in result["summary"] if r["target"] != "direct"]
    direct = result["summary"][-1]
    lines = [
        "# What the host's idle path costs a chat (concurrency 1, non-streaming)",
        "",
        stats.machine_sentence(result)
        + f" {result['setup']['rounds']} rounds of {result['setup']['requests_per_block']} requests per target and"
        " variant, alternating. Added = target p50 minus the direct upstream's p50 in the same round and variant,"
        " median over rounds.",
        "",
        "| target | added p50, as is | added p50, vCPUs kept busy | difference | rounds lower when busy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        difference = r["added_busy_ms"] - r["added_as_is_ms"]
        lines.append(
            f"| {r['target']} | +{r['added_as_is_ms']:.2f} ms | +{r['added_busy_ms']:.2f} ms | {difference:+.2f} ms"
            f" | {r['rounds_lower_when_busy']} of {r['rounds']} |"
        )
    lines += [
        "",
        f"The direct upstream's own p50: {direct['p50_as_is_ms']:.3f} ms as is, {direct['p50_busy_ms']:.3f} ms with the"
        " vCPUs kept busy.",
        "",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="What waking idle vCPUs costs Mnemo's chats at concurrency 1.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300, help="requests per target, variant and round")
    parser.add_argument("--modes", nargs="+", default=["off", "read"], choices=["off", "read", "on"])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 rounds of 30 requests")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 30
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args()
    started = stats.machine()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        workdir = Path(tmp)
        services: list[targets.Service] = []
        try:
            up = targets.upstream(workdir, 8, 0.0, 0.0).start()
            services.append(up)
            mnemo = targets.mnemo(workdir, up.url, None, targets.NO_WRITE_QUOTA).start()
            services.append(mnemo)
            seed_memories(mnemo.url)
            records = asyncio.run(run_rounds(args, up.url, mnemo.url))
        finally:
            for service in reversed(services):
                service.stop()
    result = {
        "bench": "idle",
        "setup": {"rounds": args.rounds, "requests_per_block": args.requests, "modes": args.modes, "quick": args.quick},
        "machine_start": started,
        "machine_end": stats.machine(),
        "records": records,
        "summary": summarise(records, [f"mnemo-{mode}" for mode in args.modes]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "idle.json").write_text(json.dumps(result, indent=1))
    (args.out / "idle.md").write_text(markdown(result))
    print(markdown(result))  # noqa: T201


if __name__ == "__main__":
    main()
