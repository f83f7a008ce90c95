"""bench/recall through the product's real door: LOCOMO ingested by `mnemo import` into a running
Mnemo (raw mode, default memory settings), the questions asked through its REST search, scored
like the in-process path (bench.recall.run), so the two can be compared number for number.

    .venv/bin/python -m bench.recall.run --data ../shared/bench/locomo-sample.json --through-import http://127.0.0.1:8900

Each conversation is imported as its own user (the sample id), as the in-process path stores it.
The Mnemo must hold none of those users yet (or the same memories: a re-run is de-duplicated).
Both paths store the same memories under the same ids (bench.recall.run gives its exchanges the
request ids `mnemo import` does) and score them the same; memories of exactly equal scores are
ordered by id in both, as Qdrant breaks such ties by point offsets that differ between stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.recall.locomo import Conversation
from bench.recall.metrics import Scores

ROOT = Path(__file__).resolve().parents[2]


def import_conversation(data: Path, url: str, api_key: str | None, sample_id: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "mnemo_cli.main", "import", str(data), "--format", "locomo", "--mode", "raw"]
    command += ["--user", sample_id, "--conversation", sample_id, "--url", url, "--json"]
    if api_key:
        command += ["--api-key", api_key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mnemo import of {sample_id} failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(done.stdout))


def ingest(conversations: list[Conversation], data: Path, url: str, api_key: str | None) -> dict[str, Any]:
    started, memories, imported = time.perf_counter(), 0, []
    for conversation in conversations:
        record = import_conversation(data, url, api_key, conversation.sample_id)
        memories += int(record["memories"])
        imported.append({"user": conversation.sample_id, **{k: record[k] for k in ("status", "queued", "duplicates")}})
    seconds = time.perf_counter() - started
    return {"memories": memories, "seconds": round(seconds, 1), "imports": imported}


def ask(
    conversations: list[Conversation], url: str, api_key: str | None, depth: int, threshold: float
) -> dict[str, Any]:
    scores = Scores()
    headers = {"X-Mnemo-Api-Key": api_key} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for conversation in conversations:
            for question in conversation.questions:
                body = {"query": question.text, "user_id": conversation.sample_id, "limit": depth}
                response = client.post("/v1/memories/search", json=body | {"threshold": threshold})
                response.raise_for_status()
                hits = sorted(response.json()["data"], key=lambda hit: (-round(hit["score"], 6), hit["id"]))
                scores.add(question, [(hit.get("metadata") or {}).get("dia_ids", []) for hit in hits])
    return {"recall": scores.summary()}


def compare(in_process: dict[str, Any], through_import: dict[str, Any]) -> dict[str, float]:
    """Per metric, the largest difference (points) between the two paths over every group."""
    worst: dict[str, float] = {}
    for group, row in in_process.items():
        other = through_import.get(group, {})
        for metric, value in row.items():
            if metric != "n" and metric in other:
                worst[metric] = round(max(worst.get(metric, 0.0), abs(value - other[metric])), 1)
    return worst
