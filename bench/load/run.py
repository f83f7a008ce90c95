"""bench/load: a bounded load and soak test on loopback. 64 concurrent streaming clients run
closed loops against a real ``mnemo up`` (embedded Redis, Qdrant Edge, raw extraction, memory
on) in front of a scripted upstream with realistic delays (first chunk 200 ms, chunks 20 ms
apart), for ``--duration`` seconds. Then it waits for the worker to store every exchange, and
starts a new ``mnemo up`` on the same data (each user back for one chat): what that data costs a
fresh process, to tell the store's growth from the process's own.

    .venv/bin/python -m bench.load.run [--duration 120] [--clients 64] [--quick]

Reports errors, exchanges sent against memories stored (lost, duplicated), and the Mnemo
process's RSS, open file descriptors and TCP connections before and after (from /proc). From the
start of the load until the worker has stored everything: the Redis commands per exchange
(``INFO commandstats`` on the embedded Redis, gateway and worker together) and the CPU per
exchange of the Mnemo process and of its redis-server.
Writes bench/results/load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import redis

from bench import stats
from bench.load import probe, report
from bench.overhead import targets
from bench.worker import redis_commands
from mnemo.embedded_redis import EmbeddedRedis

logger = logging.getLogger("bench.load")

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODEL = "load-model"
DRAIN_TIMEOUT_S = 300.0
WARMUP_S = 5.0


@dataclass
class Tally:
    sent: dict[str, str] = field(default_factory=dict)  # request id -> user
    errors: Counter[str] = field(default_factory=Counter)
    status_5xx: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    # X-Mnemo-Memory-Status of each answered chat: "ok", or "skipped:<reason>" when it went out
    # without its memories (issue 25: at most 0.1% under load unless a dependency is down).
    memory_status: Counter[str] = field(default_factory=Counter)


async def one_stream(
    client: httpx.AsyncClient,
    url: str,
    user: str,
    text: str,
    tally: Tally,
    extra_headers: dict[str, str] | None = None,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True}
    headers = {"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-load", **(extra_headers or {})}
    started = time.perf_counter()
    first: float | None = None
    lines: list[str] = []
    try:
        async with client.stream("POST", url, json=body, headers=headers) as reply:
            if reply.status_code != 200:
                tally.status_5xx += reply.status_code >= 500
                tally.errors[f"status {reply.status_code}"] += 1
                await reply.aread()
                return
            async for line in reply.aiter_lines():
                if not line:
                    continue
                if first is None and line.startswith("data: {"):
                    first = time.perf_counter()
                lines.append(line)
            request_id = reply.headers["x-mnemo-request-id"]
            tally.memory_status[reply.headers.get("x-mnemo-memory-status", "absent")] += 1
    except httpx.HTTPError as exc:
        tally.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
        return
    if not lines or lines[-1] != "data: [DONE]" or any('"error"' in line for line in lines):
        tally.errors["incomplete stream"] += 1
        return
    tally.sent[request_id] = user
    tally.ttft_ms.append(((first or time.perf_counter()) - started) * 1000)
    tally.total_ms.append((time.perf_counter() - started) * 1000)


async def run_load(
    url: str,
    clients: int,
    duration_s: float,
    phase: str = "load",
    *,
    text: str = "I noted {phase} fact {index}-{number}",
    extra_headers: dict[str, str] | None = None,
) -> Tally:
    """``clients`` closed loops, each its own user, each request a new ``text`` (a repeated text is
    stored once, and a repeated question answered from the query cache)."""
    tally = Tally()
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, index: int) -> None:
        number = 0
        while time.monotonic() < deadline:
            said = text.format(phase=phase, index=index, number=number)
            await one_stream(client, url, f"load-{index:03d}", said, tally, extra_headers)
            number += 1

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(clients)))
    return tally


def stored_counts(base: str, sent: dict[str, str]) -> tuple[int, int]:
    """(request ids sent that have a memory, memories beyond the first per request id)."""
    per_request: Counter[str] = Counter()
    for user in sorted(set(sent.values())):
        offset = 0
        while True:
            query = {"user_id": user, "include_invalidated": "true", "limit": "500", "offset": str(offset)}
            page = httpx.get(base + "/v1/memories", params=query, timeout=30).json()["data"]
            per_request.update(m["source_request_id"] for m in page)
            offset += len(page)
            if len(page) < 500:
                break
    stored = sum(1 for request_id in sent if per_request[request_id])
    return stored, sum(n - 1 for n in per_request.values() if n > 1)


@dataclass(frozen=True)
class Drained:
    stored: int
    duplicated: int
    seconds: float  # until every exchange sent was stored (or DRAIN_TIMEOUT_S)
    backlog: int  # exchanges sent but not stored yet when the wait began


def wait_for_worker(base: str, sent: dict[str, str]) -> Drained:
    started = time.monotonic()
    stored, duplicated = stored_counts(base, sent)
    backlog = len(sent) - stored
    while stored < len(sent) and time.monotonic() - started < DRAIN_TIMEOUT_S:
        time.sleep(2)
        stored, duplicated = stored_counts(base, sent)
    return Drained(stored, duplicated, time.monotonic() - started, backlog)


def settle(base: str, pause_s: float) -> None:
    """Idle long enough for keep-alive connections to expire, then a few sequential chats: the
    same state the 'before' snapshot is taken in, so pooled connections compare like for like."""
    time.sleep(pause_s)
    warm = Tally()
    asyncio.run(run_warmup(base + "/v1/chat/completions", warm))


async def run_warmup(url: str, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for number in range(3):
            await one_stream(client, url, "load-warmup", f"I warmed up {number} {time.time_ns()}", tally)


def restart_on_the_same_data(workdir: Path, upstream_url: str, users: list[str]) -> probe.Snapshot:
    """A new ``mnemo up`` on the soak's data dir, each user back for one chat, then as 'after':
    what the same data costs a fresh process. RSS after the soak beyond this is what the process
    kept of its own (a leak, fragmentation), not what its store holds."""
    mnemo = targets.mnemo(workdir, upstream_url, None).start()
    try:
        assert mnemo.process is not None
        settle(mnemo.url, 0)
        back = Tally()
        asyncio.run(each_user_once(mnemo.url + "/v1/chat/completions", users, back))
        wait_for_worker(mnemo.url, back.sent)
        settle(mnemo.url, 6)
        return probe.snapshot(mnemo.process.pid, workdir / "mnemo-data")
    finally:
        mnemo.stop()


async def each_user_once(url: str, users: list[str], tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for user in users:
            await one_stream(client, url, user, f"I am back {time.time_ns()}", tally)


@dataclass(frozen=True)
class Counters:
    """Redis's command counts and the CPU seconds of the Mnemo process and its redis-server."""

    calls: dict[str, int]
    mnemo_cpu_s: float
    redis_cpu_s: float


def read_counters(pid: int, redis_socket: Path) -> Counters:
    client = redis.Redis(unix_socket_path=str(redis_socket))
    try:
        calls = redis_commands.calls(cast(dict[str, Any], client.info("commandstats")))  # sync client
    finally:
        client.close()
    process = psutil.Process(pid)
    children = 0.0
    for child in process.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return Counters(calls, sum(process.cpu_times()[:2]), children)


def costs(start: Counters, load_end: Counters, drained: Counters, exchanges: int) -> dict[str, Any]:
    """Per exchange sent: Redis commands during the load, after it (the worker catching up), and
    both; CPU of the Mnemo process and of its redis-server over both."""
    count = max(1, exchanges)
    return {
        "redis_commands": {
            "during_load": redis_commands.per_exchange(redis_commands.delta(start.calls, load_end.calls), count),
            "after_load": redis_commands.per_exchange(redis_commands.delta(load_end.calls, drained.calls), count),
            "total": redis_commands.per_exchange(redis_commands.delta(start.calls, drained.calls), count),
        },
        "cpu_ms_per_exchange": {
            "mnemo": round((drained.mnemo_cpu_s - start.mnemo_cpu_s) * 1000 / count, 3),
            "redis": round((drained.redis_cpu_s - start.redis_cpu_s) * 1000 / count, 3),
        },
    }


def measure(duration_s: float, clients: int, workdir: Path) -> dict[str, Any]:
    upstream = targets.upstream(workdir, chunks=8, first_chunk_ms=200, chunk_ms=20).start()
    mnemo = targets.mnemo(workdir, upstream.url, None).start()
    try:
        assert mnemo.process is not None
        pid = mnemo.process.pid
        data_dir = workdir / "mnemo-data"
        redis_socket = EmbeddedRedis(data_dir).socket_path  # where `mnemo up` puts it
        settle(mnemo.url, 0)
        cold = probe.snapshot(pid, data_dir)
        # Pools (upstream connections, the queue's Redis connections) fill to the concurrency's
        # high-water mark once; a short warm-up at full concurrency first, so before/after
        # compares like for like and growth means a leak.
        warm = asyncio.run(run_load(mnemo.url + "/v1/chat/completions", clients, WARMUP_S, phase="warm-up"))
        wait_for_worker(mnemo.url, warm.sent)
        settle(mnemo.url, 6)
        before = probe.snapshot(pid, data_dir)
        start = read_counters(pid, redis_socket)
        started = time.monotonic()
        tally = asyncio.run(run_load(mnemo.url + "/v1/chat/completions", clients, duration_s))
        elapsed = time.monotonic() - started
        load_end = read_counters(pid, redis_socket)
        during = probe.snapshot(pid, data_dir)
        drain = wait_for_worker(mnemo.url, tally.sent)
        drained = read_counters(pid, redis_socket)
        settle(mnemo.url, 6)
        after = probe.snapshot(pid, data_dir)
        mnemo.stop()
        restarted = restart_on_the_same_data(workdir, upstream.url, sorted(set(tally.sent.values())))
    finally:
        mnemo.stop()
        upstream.stop()
    log_errors = [line for line in mnemo.log.read_text(errors="replace").splitlines() if " ERROR " in line]
    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "requests": len(tally.sent) + sum(tally.errors.values()),
        "requests_per_s": round(len(tally.sent) / elapsed, 1),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "status_5xx": tally.status_5xx,
        "memory_status": dict(tally.memory_status),
        "exchanges_sent": len(tally.sent),
        "exchanges_stored": drain.stored,
        "exchanges_lost": len(tally.sent) - drain.stored,
        "memories_duplicated": drain.duplicated,
        "worker_drain_s": round(drain.seconds, 1),
        "worker_backlog_at_load_end": drain.backlog,
        # How fast the worker caught up once the chats stopped (the 2 s polling rounds it down).
        "worker_catch_up_per_s": round(drain.backlog / drain.seconds, 1) if drain.seconds > 0 else None,
        **costs(start, load_end, drained, len(tally.sent)),
        "ttft_ms": stats.summary(tally.ttft_ms),
        "total_ms": stats.summary(tally.total_ms),
        "warmup_s": WARMUP_S,
        "mnemo_log_errors": len(log_errors),
        "mnemo_log_error_sample": log_errors[:5],
        "process": {
            "cold": asdict(cold),
            "before": asdict(before),
            "end_of_load": asdict(during),
            "after": asdict(after),
            "restarted": asdict(restarted),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="20 s of load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    duration = 20.0 if args.quick else args.duration
    options = " --quick" if args.quick else (f" --duration {args.duration:g}" if args.duration != 120 else "")
    options += f" --clients {args.clients}" if args.clients != 64 else ""
    results: dict[str, Any] = {
        "bench": "load",
        "quick": args.quick,
        "options": options,
        "machine_start": stats.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="mnemo-load-") as workdir:
        results.update(measure(duration, args.clients, Path(workdir)))
    results["machine_end"] = stats.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "load.md").write_text(report.render(results))
    logger.info("%s", report.render(results))
    return results


if __name__ == "__main__":
    main()
