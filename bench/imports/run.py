"""bench/imports: chat latency while `mnemo import` runs, against a real `mnemo up` (raw mode,
embedded Redis, bundled embedder) and a scripted upstream, each its own process.

    .venv/bin/python -m bench.imports.run [--exchanges 2000] [--chats 200]

Three blocks of sequential chats (concurrency 1): with nothing else running, then while an import
of ``--exchanges`` past exchanges runs, for another user and for the importing user itself. It
records each block's latency (p50/p99), the import's own pace, and writes bench/results/import.json
and import.md. A chat is answered before its exchange is queued, so an import can only slow chats
through the CPU it takes (its worker embeddings run on the embedder's low-priority lane).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import stats
from bench.overhead import targets

RESULTS = Path(__file__).resolve().parents[1] / "results"
IMPORTER = "bench-importer"


def write_history(path: Path, exchanges: int) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for number in range(exchanges):
            at = 1_700_000_000 + 60 * number
            said = f"On day {number} I planted {number % 17} tulips and {number % 5} roses by the old stone wall"
            file.write(json.dumps({"id": f"u{number}", "role": "user", "content": said, "created_at": at}) + "\n")
            reply = {"id": f"a{number}", "role": "assistant", "content": "Lovely garden!", "created_at": at + 1}
            file.write(json.dumps(reply) + "\n")
    return path


def chat_block(url: str, user: str, count: int, until: subprocess.Popen[bytes] | None = None) -> list[float]:
    """``count`` chats one after another (or, with ``until``, as long as that process runs)."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while len(latencies) < count if until is None else until.poll() is None:
            body = {"model": targets.MODEL, "messages": [{"role": "user", "content": "What flowers did I plant?"}]}
            started = time.perf_counter()
            response = client.post("/v1/chat/completions", json=body, headers={"X-Mnemo-User-Id": user})
            latencies.append(1000 * (time.perf_counter() - started))
            response.raise_for_status()
    return latencies


def run_import(url: str, path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mnemo_cli.main", "import", str(path), "--user", IMPORTER, "--url", url, "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    return subprocess.Popen(command, cwd=targets.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mnemo-import-bench-") as tmp:
        workdir = Path(tmp)
        upstream = targets.upstream(workdir, chunks=1, first_chunk_ms=0, chunk_ms=0).start()
        mnemo = targets.mnemo(workdir, upstream.url, None).start()
        try:
            history = write_history(workdir / "history.jsonl", args.exchanges)
            result: dict[str, Any] = {"machine_start": stats.machine(), "exchanges": args.exchanges}
            chat_block(mnemo.url, "bench-warmup", 20)
            result["idle"] = stats.summary(chat_block(mnemo.url, "bench-other", args.chats))
            for name, user in (("during_import_other_user", "bench-other"), ("during_import_same_user", IMPORTER)):
                started = time.perf_counter()
                importer = run_import(mnemo.url, history)
                latencies = chat_block(mnemo.url, user, 0, until=importer)
                out, _ = importer.communicate(timeout=600)
                seconds = time.perf_counter() - started
                record = json.loads(out)
                result[name] = stats.summary(latencies)
                result[name + "_import"] = {
                    "seconds": round(seconds, 1),
                    "exchanges_per_s": round(args.exchanges / seconds, 1),
                    **{key: record[key] for key in ("status", "queued", "duplicates", "applied", "memories")},
                }
                httpx.delete(f"{mnemo.url}/v1/users/{IMPORTER}", timeout=60).raise_for_status()  # a new start
        finally:
            mnemo.stop()
            upstream.stop()
        result["machine_end"] = stats.machine()
    return result


def report(result: dict[str, Any]) -> str:
    rows = [("idle", "nothing else running")]
    rows += [("during_import_other_user", "importing, another user chatting")]
    rows += [("during_import_same_user", "importing, the importing user chatting")]
    lines = [
        "# Chat latency during an import",
        "",
        f"{stats.machine_sentence(result)} `mnemo up` (raw mode, embedded Redis), sequential chats against a "
        f"scripted upstream while `mnemo import` sends {result['exchanges']} past exchanges.",
        "",
        "| block | chats | p50 ms | p99 ms | import |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in rows:
        block, pace = result[key], result.get(key + "_import")
        imported = f"{pace['exchanges_per_s']}/s, {pace['seconds']} s, {pace['status']}" if pace else "-"
        lines.append(f"| {label} | {block['n']} | {block['p50']} | {block['p99']} | {imported} |")
    return "\n".join(lines) + "\n"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=2000, help="past exchanges imported (default 2000)")
    parser.add_argument("--chats", type=int, default=200, help="chats in the idle block (default 200)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = main(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "import.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "import.md").write_text(report(result))
    print(report(result))  # noqa: T201


if __name__ == "__main__":
    cli()
