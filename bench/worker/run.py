"""bench/worker: exchanges through the real arq worker (llm extraction mode) against an instant
recording scripted LLM, and Mem0's ``Memory.add(infer=True)`` on the same exchanges.

    .venv/bin/python -m bench.worker.run [--exchanges 100] [--throughput-exchanges 300] [--quick]

The sequential run is repeated with extraction routed through litellm instead of the direct
httpx client, to show what the direct path saves.

Each exchange's outcome (``MemoryWriter.process``'s time and ``IngestResult``) is collected
bench-side (bench/worker/outcomes.py; drain jobs keep no arq result), and Redis's
``INFO commandstats`` is read before the enqueue, after it and after the worker's run, for the
Redis commands per exchange (bench/worker/redis_commands.py).

Writes bench/results/worker.{json,md}. Tokens are counted with litellm's tokenizer (offline) on
what the scripted LLM received and answered, the same way for both.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import facts, stats, venvs
from bench.worker import redis_commands, report
from bench.worker.outcomes import Outcome, Outcomes
from bench.worker.stages import Stages
from mnemo.config import Settings
from mnemo.embedded_redis import EmbeddedRedis
from mnemo.llm import LiteLLMClient, import_litellm
from mnemo.models import Scope, utcnow
from mnemo.queue import Exchange, ExchangeMessage, ExchangeQueue, redis_settings
from mnemo.runtime import open_core
from mnemo_cli.run import run_on_loop
from tests.support.servers import free_port
from workers import settings as worker_settings
from workers.settings import build_worker

logger = logging.getLogger("bench.worker")

BENCH = Path(__file__).resolve().parents[1]
MODEL = "openai/scripted"
# The loop a worker process runs on by default, so Python overhead is measured as deployed.
EVENT_LOOP = Settings().event_loop
REPLIES = ["Noted, thanks!", "Good to know.", "Got it - I'll keep that in mind.", "Thanks for telling me."]


def make_exchanges(count: int, users: int, seed: int = 5) -> list[dict[str, Any]]:
    """Each exchange: a user message stating two facts (some repeated or changed later), and a reply."""
    rng = random.Random(seed)
    pool = {f"w{u:03d}": facts.user_facts(f"w{u:03d}", 8, rng) for u in range(users)}
    exchanges = []
    for number in range(count):
        user = f"w{number % users:03d}"
        first, second = rng.sample(pool[user], 2)
        text = f"{first.text} and {second.text[0].lower()}{second.text[1:]}."
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": rng.choice(REPLIES)}]
        exchanges.append({"user_id": user, "messages": messages})
    return exchanges


def to_exchange(number: int, raw: dict[str, Any]) -> Exchange:
    at = utcnow() + timedelta(milliseconds=number)
    return Exchange(
        request_id=f"bench-{number:06d}",
        scope=Scope(user_id=raw["user_id"]),
        model="bench",
        messages=[ExchangeMessage(role=m["role"], content=m["content"]) for m in raw["messages"][:1]],
        reply=raw["messages"][1]["content"],
        started_at=at,
        completed_at=at,
    )


async def run_mnemo(
    upstream_url: str, exchanges: list[dict[str, Any]], max_jobs: int, redis_url: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        settings = Settings.model_validate(
            {
                "data_dir": tmp,
                "extraction": {"mode": "llm", "model": MODEL, "base_url": upstream_url + "/v1", "api_key": "sk-x"},
                "worker": {"max_jobs": max_jobs, "retry_base_delay_s": 0.05},
                # A queue of its own per run, so a shared Redis database holds no stale jobs for it.
                "redis": {"url": redis_url, "queue_name": f"bench:worker:{uuid.uuid4().hex[:8]}"},
            }
        )
        if redis_url:
            return await drive_worker(settings, redis_settings(settings), exchanges, upstream_url, None)
        embedded = EmbeddedRedis(settings.data_path)
        await embedded.start()
        try:
            redis = redis_settings(settings, str(embedded.socket_path))
            return await drive_worker(settings, redis, exchanges, upstream_url, embedded_pid(embedded))
        finally:
            await embedded.stop()


def embedded_pid(embedded: EmbeddedRedis) -> int | None:
    try:
        return int(embedded.pid_file.read_text())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (0 without one: a shared Redis's CPU is not the run's)."""
    if pid is None:
        return 0.0
    return float(sum(psutil.Process(pid).cpu_times()[:2]))


async def drive_worker(
    settings: Settings, redis: Any, exchanges: list[dict[str, Any]], upstream_url: str, redis_pid: int | None
) -> dict[str, Any]:
    core = await open_core(settings)
    queue = await ExchangeQueue.connect(redis, settings.redis.queue_name)
    timer = Stages()
    outcomes = Outcomes()
    try:
        # Warm-up: litellm's import and first call, the embedder's first batch, outside the timed run.
        warmup = make_exchanges(4, 2, seed=99)
        for number, raw in enumerate(warmup):
            await queue.enqueue(to_exchange(10**6 + number, raw | {"user_id": f"warmup-{raw['user_id']}"}))
        await run_burst(settings, redis, core)
        async with httpx.AsyncClient() as client:  # forget the warm-up's LLM calls
            await client.get(upstream_url + "/bench/recorded", timeout=30)
        pool = await queue.pool()
        calls_start = await redis_commands.snapshot(pool)
        for number, raw in enumerate(exchanges):
            await queue.enqueue(to_exchange(number, raw))
        calls_enqueued = await redis_commands.snapshot(pool)
        worker = build_worker(settings, redis, core=core, burst=True)
        timer.install()
        outcomes.install()
        process = psutil.Process()
        cpu_before = sum(process.cpu_times()[:2])
        redis_cpu_before = cpu_seconds(redis_pid)
        started = time.perf_counter()
        await worker.async_run()
        wall = time.perf_counter() - started
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu_before
        calls_end = await redis_commands.snapshot(pool)
        applied = outcomes.of({f"bench-{number:06d}" for number in range(len(exchanges))})
        await worker.close()
    finally:
        outcomes.uninstall()
        timer.uninstall()
        await queue.close()
        await core.close()
    summary = summarise_jobs(applied, wall, cpu, timer, len(exchanges))
    if redis_pid is not None:
        summary["redis_cpu_ms_per_exchange"] = round(redis_cpu * 1000 / len(exchanges), 3)
    summary["redis_commands"] = redis_commands.summarise(calls_start, calls_enqueued, calls_end, len(exchanges))
    summary["redis_commands"]["server"] = "embedded" if redis_pid is not None else "shared (counts other clients too)"
    return summary


async def run_burst(settings: Settings, redis: Any, core: Any) -> None:
    worker = build_worker(settings, redis, core=core, burst=True)
    try:
        await worker.async_run()
    finally:
        await worker.close()


def summarise_jobs(applied: list[Outcome], wall: float, cpu: float, timer: Stages, count: int) -> dict[str, Any]:
    """``job_ms`` is each exchange's ``MemoryWriter.process`` time (its LLM calls, embeddings and
    store writes, the drain's fence script before its first write included)."""
    durations = [outcome.duration_ms for outcome in applied]
    results = [outcome.result for outcome in applied]
    return {
        "exchanges": count,
        "applied": len(applied),
        "wall_s": round(wall, 3),
        "exchanges_per_s": round(count / wall, 1),
        "job_ms": stats.summary(durations),
        "llm_calls": timer.llm_calls,
        "llm_ms_total": round(timer.llm_seconds * 1000, 1),
        "own_ms_per_exchange": round((sum(durations) - timer.llm_seconds * 1000) / max(1, len(applied)), 3),
        "stage_ms_per_exchange": timer.per_exchange(count),
        "process_cpu_ms_per_exchange": round(cpu * 1000 / count, 3),
        "facts": sum(r.facts for r in results),
        "restated": sum(r.restated for r in results),
        "created": sum(len(r.created) for r in results),
    }


def count_tokens(records: list[dict[str, Any]]) -> dict[str, Any]:
    litellm = import_litellm()
    prompt = sum(litellm.token_counter(model="gpt-4o-mini", messages=r["messages"]) for r in records)
    completion = sum(litellm.token_counter(model="gpt-4o-mini", text=r["reply"]) for r in records)
    system = sum(litellm.token_counter(model="gpt-4o-mini", text=r["messages"][0]["content"]) for r in records)
    tasks: dict[str, int] = {}
    for record in records:
        tasks[record["task"]] = tasks.get(record["task"], 0) + 1
    return {
        "calls": len(records),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "system_prompt_tokens": system,
        "calls_by_task": tasks,
    }


def run_mem0(upstream_url: str, exchanges: list[dict[str, Any]]) -> dict[str, Any]:
    python = venvs.mem0_python()
    with tempfile.TemporaryDirectory(prefix="bench-worker-mem0-") as tmp:
        spec = {"dir": tmp, "llm_base_url": upstream_url + "/v1", "exchanges": exchanges}
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [str(python), str(BENCH / "mem0_peer.py"), "add", str(spec_path), str(out_path)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        raw = json.loads(out_path.read_text())
    return {"exchanges": len(exchanges), "add_ms": stats.summary(raw["add_ms"]), "mem0_version": raw["mem0_version"]}


def recorded(upstream_url: str) -> list[dict[str, Any]]:
    return list(httpx.get(upstream_url + "/bench/recorded", timeout=30).json())


def start_upstream(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (workdir / "upstream.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker.upstream", "--port", str(port)],
            cwd=BENCH.parent,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the scripted upstream did not start")


@contextmanager
def extraction_through_litellm() -> Iterator[None]:
    """The same openai/ model through litellm instead of httpx: what the direct path saves."""
    original = worker_settings.build_llm
    worker_settings.build_llm = LiteLLMClient
    try:
        yield
    finally:
        worker_settings.build_llm = original


def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    same = make_exchanges(args.exchanges, args.users)
    recorded(url)
    sequential = run_on_loop(run_mnemo(url, same, 1, args.redis_url), EVENT_LOOP)
    sequential["tokens"] = count_tokens(recorded(url))
    with extraction_through_litellm():
        via_litellm = run_on_loop(run_mnemo(url, same, 1, args.redis_url), EVENT_LOOP)
    via_litellm["tokens"] = count_tokens(recorded(url))
    peer = run_mem0(url, same) if not args.skip_mem0 else None
    if peer is not None:
        peer["tokens"] = count_tokens(recorded(url))
    many = make_exchanges(args.throughput_exchanges, args.users * 3, seed=6)
    concurrent = run_on_loop(run_mnemo(url, many, 8, args.redis_url), EVENT_LOOP)
    concurrent["tokens"] = count_tokens(recorded(url))
    return {
        "mnemo_sequential": sequential,
        "mnemo_via_litellm": via_litellm,
        "mnemo_concurrent": concurrent,
        "mem0": peer,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Worker cost: Mnemo's arq worker vs Mem0 add(infer=True).")
    parser.add_argument("--exchanges", type=int, default=100, help="exchanges run by both (one job at a time)")
    parser.add_argument("--throughput-exchanges", type=int, default=300, help="exchanges at worker.max_jobs=8")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--skip-mem0", action="store_true")
    parser.add_argument("--redis-url", default=None, help="a Redis server (default: the embedded one, fsync always)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if args.quick:
        args.exchanges, args.throughput_exchanges, args.users = 12, 24, 3
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("arq.worker", "httpx", "LiteLLM"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args()
    started = stats.machine()
    with tempfile.TemporaryDirectory(prefix="bench-worker-up-") as tmp:
        process, url = start_upstream(Path(tmp))
        try:
            measured = measure(args, url)
        finally:
            process.terminate()
            process.wait(10)
    setup = {
        "exchanges": args.exchanges,
        "throughput_exchanges": args.throughput_exchanges,
        "users": args.users,
        "extraction_model": MODEL,
        "tokenizer": "litellm.token_counter(model='gpt-4o-mini')",
    }
    result = report.build(measured, setup, started, stats.machine())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker.json").write_text(json.dumps(result, indent=1))
    (args.out / "worker.md").write_text(report.markdown(result))
    print(report.markdown(result))  # noqa: T201


if __name__ == "__main__":
    main()
