"""bench/load/read_soak: does a chat leave anything behind? The same 64 streaming clients as
``bench.load.run``, with memory read only (``X-Mnemo-Memory: read``: every chat embeds, searches
and injects, nothing is stored), so the data stays put and RSS can only grow by what requests keep.

    .venv/bin/python -m bench.load.read_soak [--minutes 5] [--out DIR]

It seeds the 64 users with 15 s of memory-on chats, waits for the worker, runs 10 s of reads to
fill the pools, then reads for ``--minutes`` minutes, one snapshot of the Mnemo process after each
minute (after 6 s idle and 3 chats, as ``bench.load.run`` does).
Writes bench/results/load-read.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import stats
from bench.load import probe, run
from bench.overhead import targets

logger = logging.getLogger("bench.load.read_soak")

SEED_S = 15.0
FILL_S = 10.0
READ_HEADERS = {"X-Mnemo-Memory": "read"}


def read_load(url: str, seconds: float, phase: str) -> run.Tally:
    """64 clients, each request a question not asked in the block (the query cache's 2,048 entries
    hold none of an earlier block's first questions by then, so every one is embedded)."""
    question = "what did I note about fact {index}-{number}?"
    return asyncio.run(run.run_load(url, 64, seconds, phase, text=question, extra_headers=READ_HEADERS))


def measure(minutes: int, workdir: Path) -> dict[str, Any]:
    upstream = targets.upstream(workdir, chunks=8, first_chunk_ms=200, chunk_ms=20).start()
    mnemo = targets.mnemo(workdir, upstream.url, None).start()
    url = mnemo.url + "/v1/chat/completions"
    minutes_out: list[dict[str, Any]] = []
    try:
        assert mnemo.process is not None
        pid, data_dir = mnemo.process.pid, workdir / "mnemo-data"
        seeded = asyncio.run(run.run_load(url, 64, SEED_S, phase="seed"))
        run.wait_for_worker(mnemo.url, seeded.sent)
        read_load(url, FILL_S, "fill")
        run.settle(mnemo.url, 6)
        before = probe.snapshot(pid, data_dir)
        for minute in range(1, minutes + 1):
            tally = read_load(url, 60, f"minute {minute}")
            run.settle(mnemo.url, 6)
            snapshot = asdict(probe.snapshot(pid, data_dir))
            chats = {"chats": sum(tally.memory_status.values()), "memory_status": dict(tally.memory_status)}
            minutes_out.append({"minute": minute, **chats, "errors": dict(tally.errors), "process": snapshot})
            logger.info("minute %d: %d chats, RSS %.1f MB", minute, chats["chats"], snapshot["rss_mb"])
    finally:
        mnemo.stop()
        upstream.stop()
    return {"seeded_exchanges": len(seeded.sent), "before": asdict(before), "minutes": minutes_out}


def render(results: dict[str, Any]) -> str:
    before, minutes = results["before"], results["minutes"]
    machine = results["machine_start"]
    lines = [
        "# Read soak: what chats leave behind",
        "",
        f"64 concurrent streaming clients, memory read only (`X-Mnemo-Memory: read`: each chat embeds a new "
        f"question, searches and injects; nothing is stored) against `mnemo up` whose 64 users hold "
        f"{results['seeded_exchanges']} memories. Machine: {machine.get('cpus')} CPUs, load average at start "
        f"{machine.get('load_average')}. Command: `.venv/bin/python -m bench.load.read_soak`.",
        "",
        "| after | chats | without their memories | errors | RSS MB | heap MB | other anonymous MB | store files MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        row("the pools filled", None, before),
    ]
    lines += [row(f"{m['minute']} min", m, m["process"]) for m in minutes]
    last = minutes[-1]["process"]["rss_mb"] if minutes else before["rss_mb"]
    total = sum(m["chats"] for m in minutes)
    lines += ["", f"RSS after {total} chats ÷ before them: {last / before['rss_mb']:.2f}.", ""]
    return "\n".join(lines)


def row(label: str, minute: dict[str, Any] | None, snapshot: dict[str, Any]) -> str:
    memory = snapshot.get("memory", {})
    heap = memory.get("Python heap (brk)", 0.0)
    anonymous = next((mb for kind, mb in memory.items() if kind.startswith("anonymous")), 0.0)
    store = memory.get("store files (Qdrant Edge)", 0.0)
    if minute is None:
        counts = "| – | – | –"
    else:
        skipped = sum(n for status, n in minute["memory_status"].items() if status.startswith("skipped"))
        counts = f"| {minute['chats']} | {skipped} | {sum(minute['errors'].values())}"
    return f"| {label} {counts} | {snapshot['rss_mb']} | {heap} | {anonymous} | {store} |"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=run.RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results: dict[str, Any] = {"bench": "load-read", "machine_start": stats.machine()}
    with tempfile.TemporaryDirectory(prefix="mnemo-read-soak-") as workdir:
        results.update(measure(args.minutes, Path(workdir)))
    results["machine_end"] = stats.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load-read.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "load-read.md").write_text(render(results))
    logger.info("%s", render(results))
    return results


if __name__ == "__main__":
    main()
