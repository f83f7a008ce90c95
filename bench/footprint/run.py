"""bench/footprint: how fast Mnemo starts and what it holds in memory, beside the LiteLLM proxy.

    .venv/bin/python -m bench.footprint.run [--rounds 3] [--quick] [--out DIR]

Each round starts, in turn and one at a time: ``mnemo up`` (the embedded default; the model's
graphs already built), ``mnemo up`` restarted on a store an earlier run left (``seed_store``),
``mnemo up`` on a machine's first start (an empty model cache: the graphs
are built first, in a child process), ``mnemo serve`` (the gateway alone, server mode: Redis on
its own redis-server, the store through qdrant-client's local mode, as no Qdrant server binary
exists here; a real deployment imports the same client), and the LiteLLM proxy (1 worker, no
database). For each: seconds from spawn to its readiness answer (``/readyz``; LiteLLM's
``/health/liveliness``), polled every 20 ms, and RSS one second after ready (the process and its
children; ``mnemo up``'s embedded redis-server separately). For both ``mnemo up`` it reads where
the memory is, from ``/proc/<pid>/smaps``: the Python heap, other anonymous memory (native:
onnxruntime's sessions and arena, the tokenizers, thread stacks), shared
libraries by package, the model's mapped word table and the store's files. Medians over rounds.
Growth under load (RSS after the soak ÷ at ready) is ``bench/load``'s.
Writes bench/results/footprint.{json,md}.
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
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml

from bench import stats, venvs
from bench.load import probe
from bench.overhead import targets
from mnemo.embedding import LOCAL_DIMENSION, LOCAL_MODEL_IDS
from mnemo.models import Memory, MemoryEvent
from mnemo.store.base import StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from tests.support.servers import free_port

POLL_S = 0.02
logger = logging.getLogger("bench.footprint")


def wait_ready(service: targets.Service, timeout_s: float = 180) -> float:
    """Spawn the service and return the seconds until its readiness path answers 200."""
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")} | service.env
    with service.log.open("ab") as log:
        service.process = subprocess.Popen(service.command, cwd=targets.ROOT, env=env, stdout=log, stderr=log)
    while True:
        try:
            if httpx.get(service.url + service.ready_path, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if service.process.poll() is not None or time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"{service.name} did not start; see {service.log}")
        time.sleep(POLL_S)


def rss_mb(pid: int) -> dict[str, float]:
    """RSS of the process, and of each child by its command name."""
    root = psutil.Process(pid)
    out = {"process": root.memory_info().rss / 2**20}
    for child in root.children(recursive=True):
        out[child.name()] = out.get(child.name(), 0.0) + child.memory_info().rss / 2**20
    return out


def config_for(workdir: Path, port: int, upstream_url: str, **sections: Any) -> Path:
    config = targets.mnemo_config(workdir / "data", port, upstream_url, None, sections)
    path = workdir / "mnemo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def measure_mnemo(kind: str, root: Path, upstream_url: str, model_cache: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=kind + "-", dir=root))
    port = free_port()
    sections: dict[str, Any] = {"embedder": {"threads": 1, "model_cache_dir": str(model_cache)}}
    redis: targets.Service | None = None
    if kind == "serve":
        redis = targets.redis_server(workdir)
        redis.start()
        sections |= {"redis": {"url": redis.url.replace("http", "redis") + "/0"}}
        sections |= {"store": {"kind": "qdrant", "path": str(workdir / "qdrant-local")}}
    if kind == "up-restart":
        asyncio.run(seed_store(workdir / "data" / "qdrant-edge", RESTART_MEMORIES))
    path = config_for(workdir, port, upstream_url, **sections)
    command = "serve" if kind == "serve" else "up"
    argv = [sys.executable, "-m", "mnemo_cli.main", "--log-level", "WARNING", command, "--config", str(path)]
    service = targets.Service(f"mnemo {kind}", argv, port, "/readyz", workdir / "mnemo.log")
    try:
        seconds = wait_ready(service)
        time.sleep(1)
        assert service.process is not None
        result: dict[str, Any] = {"ready_s": round(seconds, 3), "rss_mb": rss_mb(service.process.pid)}
        if kind in ("up", "up-restart"):
            result["where"] = probe.memory_by_kind(service.process.pid, workdir / "data")
        return result
    finally:
        service.stop()
        if redis is not None:
            redis.stop()


async def seed_store(directory: Path, count: int) -> None:
    """What an earlier run left: ``count`` memories of ``RESTART_USERS`` users, each with the
    event that recorded it (random unit vectors: only the store's size matters here)."""
    identity = StoreIdentity(LOCAL_MODEL_IDS["int8"], LOCAL_DIMENSION)
    store = EdgeMemoryStore(directory, "mnemo", identity)
    await store.open()
    rng = np.random.default_rng(0)
    try:
        for start in range(0, count, 1000):
            now = datetime.now(UTC)
            batch = [
                Memory(
                    id=str(uuid.uuid4()),
                    user_id=f"user-{n % RESTART_USERS}",
                    text=f"remembered fact {n}",
                    created_at=now,
                )
                for n in range(start, min(count, start + 1000))
            ]
            vectors = rng.standard_normal((len(batch), LOCAL_DIMENSION)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            await store.upsert(batch, vectors.tolist())
            events = [
                MemoryEvent(
                    id=str(uuid.uuid4()),
                    memory_id=m.id,
                    user_id=m.user_id,
                    action="ADD",
                    new_text=m.text,
                    created_at=now,
                )
                for m in batch
            ]
            await store.add_events(events)
    finally:
        await store.close()


def measure_litellm(root: Path, upstream_url: str, python: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="litellm-", dir=root))
    service = targets.litellm(workdir, python, upstream_url)
    try:
        seconds = wait_ready(service)
        time.sleep(1)
        assert service.process is not None
        return {"ready_s": round(seconds, 3), "rss_mb": rss_mb(service.process.pid)}
    finally:
        service.stop()


def median_of(rounds: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for result in rounds:
        value: Any = result
        for key in keys:
            value = value.get(key, 0.0) if isinstance(value, dict) else 0.0
        values.append(float(value))
    return round(statistics.median(values), 2)


def report(result: dict[str, Any]) -> str:
    runs = result["targets"]
    litellm_ready = median_of(runs["litellm"], "ready_s")
    lines = [
        "# Footprint: start-up and memory at ready",
        "",
        stats.machine_sentence(result) + f" Medians over {result['rounds']} rounds; one process at a time.",
        "Command: `.venv/bin/python -m bench.footprint.run`.",
        "",
        "| target | start to ready s | ÷ LiteLLM | RSS at ready MB | of which children MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, label in TARGET_LABELS.items():
        if not runs.get(name):
            continue  # a target this run did not measure
        ready = median_of(runs[name], "ready_s")
        process = median_of(runs[name], "rss_mb", "process")
        children = sorted({key for run in runs[name] for key in run["rss_mb"] if key != "process"})
        child_text = ", ".join(f"{child} {median_of(runs[name], 'rss_mb', child)}" for child in children) or "none"
        lines.append(f"| {label} | {ready} | {stats.ratio(ready, litellm_ready) or ''} | {process} | {child_text} |")
    shown = [name for name in ("up", "up-restart") if runs.get(name)]
    where = {kind for name in shown for kind in runs[name][0]["where"]}
    kinds = sorted(where, key=lambda kind: -median_of(runs["up"], "where", kind))
    lines += ["", "Where `mnemo up`'s memory is at ready (RSS by mapping, MB, median over rounds):", ""]
    lines += ["| mapping | " + " | ".join(TARGET_LABELS[name] for name in shown) + " |"]
    lines += ["| --- |" + " --- |" * len(shown)]
    for kind in kinds:
        values = [median_of(runs[name], "where", kind) for name in shown]
        if max(values) >= 1:
            lines.append(f"| {kind} | " + " | ".join(str(value) for value in values) + " |")
    return "\n".join(lines) + "\n"


RESTART_MEMORIES = 10_000
RESTART_USERS = 100
TARGET_LABELS = {
    "up": "`mnemo up` (model graphs built)",
    "up-restart": f"`mnemo up` restarted on a store of {RESTART_MEMORIES:,} memories",
    "up-first-start": "`mnemo up`, first start on a machine (builds the graphs)",
    "serve": "`mnemo serve` (gateway only; Redis and store outside)",
    "litellm": "LiteLLM proxy 1.108.7",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--out", type=Path, default=targets.ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rounds = 1 if args.quick else args.rounds
    python = venvs.litellm_python()
    root = Path(tempfile.mkdtemp(prefix="mnemo-footprint-"))
    upstream = targets.upstream(root, chunks=8, first_chunk_ms=0, chunk_ms=0).start()
    result: dict[str, Any] = {"machine_start": stats.machine(), "rounds": rounds}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in TARGET_LABELS}
    warm_cache = root / "model-cache"
    try:
        for _ in range(rounds):
            runs["up"].append(measure_mnemo("up", root, upstream.url, warm_cache))
            runs["up-restart"].append(measure_mnemo("up-restart", root, upstream.url, warm_cache))
            cold_cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=root))
            runs["up-first-start"].append(measure_mnemo("up-first-start", root, upstream.url, cold_cache))
            runs["serve"].append(measure_mnemo("serve", root, upstream.url, warm_cache))
            runs["litellm"].append(measure_litellm(root, upstream.url, python))
    finally:
        upstream.stop()
    result |= {"targets": runs, "machine_end": stats.machine()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "footprint.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (args.out / "footprint.md").write_text(text)
    logger.info("wrote %s:\n%s", args.out / "footprint.md", text)


if __name__ == "__main__":
    main()
