"""bench/overhead: what a gateway adds to each chat request, beside the LiteLLM proxy.

    .venv/bin/python -m bench.overhead.run [--rounds 3] [--requests 300] [--quick]
    .venv/bin/python -m bench.overhead.run --apis chat responses messages   # -> overhead-apis.*

One run starts a scripted upstream, a real ``mnemo up`` (embedded Redis, Qdrant Edge, the
bundled embedder; the user holds 1,000 memories), the production shape (``mnemo serve`` and a
worker in its own process on a redis-server of the bench's own: target ``serve-on``, chat only
unless ``--serve-apis``) and the LiteLLM proxy, then measures every target round by round,
interleaved, at concurrency 1, 16 and 64, streaming and not. Writes
bench/results/overhead.{json,md,png}. ``--apis`` adds OpenAI's Responses API and Anthropic's
Messages API as request kinds, measured the same way and interleaved with the chat rows in each
round (written to overhead-apis.{json,md} unless ``--name`` says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench import facts, stats, venvs
from bench.overhead import report, targets
from bench.overhead.apis import ANTHROPIC_VERSION, BY_NAME, CHAT, Api
from bench.overhead.load import Block, Target, new_client, run_block

logger = logging.getLogger("bench.overhead")

USER = "bench-user"
SEEDED = 1000
RESULTS = Path(__file__).resolve().parents[1] / "results"
TARGETS = ["direct", "mnemo-off", "mnemo-read", "mnemo-on", "serve-on", "litellm"]
MNEMO_TARGETS = {"mnemo-off", "mnemo-read", "mnemo-on", "serve-on"}  # scraped, and drained after each block


SERVE_SETUP = (
    "mnemo serve (the gateway alone, its own Qdrant Edge store holding the seeded memories) + "
    "mnemo worker's code in its own process (bench.overhead.edge_worker, another Qdrant Edge store) + "
    "a redis-server of the bench's own, embedder.threads=1 in each; no Qdrant server here, and neither "
    "local store can be shared by two processes"
)


def credential(api: Api, key: str) -> dict[str, str]:
    """How a client of ``api`` sends its key: Anthropic's SDKs as x-api-key with their version."""
    return {"x-api-key": key, **ANTHROPIC_VERSION} if api.name == "messages" else {"authorization": f"Bearer {key}"}


def build_targets(
    upstream: str, mnemo: str, litellm: str, names: list[str], api: Api = CHAT, serve: str = ""
) -> list[Target]:
    def via_mnemo(mode: str) -> dict[str, str]:
        return credential(api, "sk-client") | {"x-mnemo-user-id": USER, "x-mnemo-memory": mode}

    every = [
        Target("direct", upstream + "/v1", credential(api, "sk-up"), api),
        Target("mnemo-off", mnemo + "/v1", via_mnemo("off"), api),
        Target("mnemo-read", mnemo + "/v1", via_mnemo("read"), api),
        Target("mnemo-on", mnemo + "/v1", via_mnemo("on"), api),
        Target("serve-on", serve + "/v1", via_mnemo("on"), api),
        Target("litellm", litellm + "/v1", credential(api, targets.MASTER_KEY), api),
    ]
    return [target for target in every if target.name in names]


def bodies(stream: bool, questions: Iterator[str], api: Api = CHAT) -> Iterator[dict[str, object]]:
    while True:
        yield api.body(next(questions), stream)


def seed_memories(mnemo_url: str) -> None:
    """1,000 memories for the bench user, through the memory API (embedded and stored for real)."""
    texts = [fact.text for fact in facts.user_facts(USER, SEEDED, random.Random(3))]
    for start in range(0, SEEDED, 100):
        reply = httpx.post(f"{mnemo_url}/v1/memories", json={"user_id": USER, "facts": texts[start : start + 100]})
        reply.raise_for_status()


def scrape(mnemo_url: str) -> dict[str, float]:
    text = httpx.get(mnemo_url + "/metrics", timeout=10).text
    values: dict[str, float] = {}
    names = ("mnemo_retrieval_fail_open_total", "mnemo_queue_depth")
    for name in (*names, "mnemo_retrieval_duration_seconds_sum", "mnemo_retrieval_duration_seconds_count"):
        values[name] = sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))
    return values


def wait_for_queue(mnemo_url: str, timeout_s: float = 120) -> float:
    started = time.monotonic()
    while scrape(mnemo_url)["mnemo_queue_depth"] > 0 and time.monotonic() - started < timeout_s:
        time.sleep(0.05)
    return time.monotonic() - started


async def measure(
    target: Target,
    service: targets.Deployment,
    stream: bool,
    concurrency: int,
    count: int,
    questions: Iterator[str],
) -> tuple[Block, dict[str, Any]]:
    is_mnemo = target.name in MNEMO_TARGETS
    before_metrics = scrape(service.url) if is_mnemo else {}
    before = service.usage()
    async with new_client(concurrency) as client:
        block = await run_block(client, target, bodies(stream, questions, target.api), count, concurrency)
    extra: dict[str, Any] = {}
    if is_mnemo:
        extra["queue_drain_s"] = round(wait_for_queue(service.url), 3)  # the worker's CPU belongs to this block
        after = scrape(service.url)
        extra["fail_open"] = (
            after["mnemo_retrieval_fail_open_total"] - before_metrics["mnemo_retrieval_fail_open_total"]
        )
        observed = (
            after["mnemo_retrieval_duration_seconds_count"] - before_metrics["mnemo_retrieval_duration_seconds_count"]
        )
        spent = after["mnemo_retrieval_duration_seconds_sum"] - before_metrics["mnemo_retrieval_duration_seconds_sum"]
        extra["retrieval_ms_mean"] = round(spent * 1000 / observed, 3) if observed else None
    after_usage = service.usage()
    done = max(1, len(block.total_ms))
    processes = {
        role: {
            "cpu_ms_per_request": round((cpu - before[role][0]) * 1000 / done, 3),
            "rss_mb": round(rss / 2**20, 1),
        }
        for role, (cpu, rss) in after_usage.items()
    }
    # The target's cost is every process serving it, as mnemo up's includes its worker and Redis.
    extra["cpu_ms_per_request"] = round(sum(p["cpu_ms_per_request"] for p in processes.values()), 3)
    extra["rss_mb"] = round(sum(p["rss_mb"] for p in processes.values()), 1)
    if len(processes) > 1:
        extra["processes"] = processes
    return block, extra


def block_record(
    target: Target, stream: bool, concurrency: int, round_: int, block: Block, extra: dict[str, Any]
) -> dict[str, Any]:
    if block.failures:
        extra = {**extra, "failures": block.failures}
    return {
        "api": target.api.name,
        "target": target.name,
        "stream": stream,
        "concurrency": concurrency,
        "round": round_,
        "ttft": stats.summary(block.ttft_ms),
        "total": stats.summary(block.total_ms),
        "requests_per_s": round(len(block.total_ms) / block.wall_s, 1) if block.wall_s else 0.0,
        "errors": block.errors,
        "with_memories": block.with_memories,
        **extra,
    }


async def run_rounds(args: argparse.Namespace, plan: list[tuple[Target, targets.Deployment]]) -> list[dict[str, Any]]:
    questions = iter(facts.unique_questions(10_000_000 if not args.quick else 100_000))
    for target, service in plan:  # warm-up: connections, caches, JIT-free but lazy imports
        for stream in (False, True):
            await measure(target, service, stream, 4, 40, questions)
    apis = list(dict.fromkeys(target.api for target, _ in plan))
    records: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        # Every API at a given concurrency and streaming mode runs back to back, so a burst of
        # load from elsewhere hits each of them, as the rotating target order spreads it over targets.
        for stream, concurrency, api in itertools.product((False, True), args.concurrency, apis):
            count = max(args.requests, concurrency * 4)
            mine = [(target, service) for target, service in plan if target.api == api]
            shift = (round_ + concurrency) % len(mine)
            for target, service in mine[shift:] + mine[:shift]:
                block, extra = await measure(target, service, stream, concurrency, count, questions)
                records.append(block_record(target, stream, concurrency, round_, block, extra))
                logger.info(
                    "round %d %s %s c=%d stream=%s p50 %.2f ms%s",
                    round_,
                    api.name,
                    target.name,
                    concurrency,
                    stream,
                    records[-1]["total"]["p50"],
                    f", {block.errors} errors: {block.failures[0]}" if block.errors else "",
                )
    return records


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gateway overhead: direct vs Mnemo vs LiteLLM proxy.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150, help="requests per block (at least 4 x concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--targets", nargs="+", default=TARGETS, choices=TARGETS)
    parser.add_argument(
        "--apis", nargs="+", default=["chat"], choices=list(BY_NAME), help="model APIs to send (default: chat only)"
    )
    parser.add_argument(
        "--litellm-apis",
        nargs="+",
        default=list(BY_NAME),
        choices=list(BY_NAME),
        help="the APIs the LiteLLM proxy is measured on (leave out one it does not serve)",
    )
    parser.add_argument(
        "--serve-apis",
        nargs="+",
        default=["chat"],
        choices=list(BY_NAME),
        help="the APIs the production shape (serve-on) is measured on (default: chat; relaying costs the same on each)",
    )
    parser.add_argument(
        "--name", default=None, help="results file name (default: overhead, or overhead-apis with --apis beyond chat)"
    )
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--first-chunk-ms", type=float, default=0.0)
    parser.add_argument("--chunk-ms", type=float, default=0.0)
    parser.add_argument("--redis-url", default=None, help="a Redis for Mnemo (default: its embedded Redis)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, 40 requests, concurrency 1 and 8")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.concurrency = 1, 40, [1, 8]
    args.name = args.name or ("overhead" if args.apis == ["chat"] else "overhead-apis")
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would load the client
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services on the way out
    args = parse_args()
    started = stats.machine()
    litellm_python = venvs.litellm_python() if "litellm" in args.targets else None
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        workdir = Path(tmp)
        services: list[targets.Service | targets.Deployment] = []
        try:
            up = targets.upstream(workdir, args.chunks, args.first_chunk_ms, args.chunk_ms).start()
            services.append(up)
            mnemo = targets.mnemo(workdir, up.url, args.redis_url, targets.NO_WRITE_QUOTA).start()
            services.append(mnemo)
            seed_memories(mnemo.url)
            serve = None
            if "serve-on" in args.targets:
                serve = targets.serve_shape(workdir, up.url, targets.NO_WRITE_QUOTA)
                services.append(serve)  # stopped whole, even if it fails half-started
                serve.start()
                seed_memories(serve.url)
            proxy = targets.litellm(workdir, litellm_python, up.url).start() if litellm_python else None
            if proxy:
                services.append(proxy)
            by_name = {"direct": up.deployment(), "serve-on": serve, "litellm": proxy and proxy.deployment()}
            served_on = {"litellm": args.litellm_apis, "serve-on": args.serve_apis}
            plan = [
                (t, by_name.get(t.name) or mnemo.deployment())
                for api in (BY_NAME[name] for name in args.apis)
                for t in build_targets(
                    up.url, mnemo.url, proxy.url if proxy else "", args.targets, api, serve.url if serve else ""
                )
                if api.name in served_on.get(t.name, [api.name])
            ]
            records = asyncio.run(run_rounds(args, plan))
            memories = len(httpx.get(f"{mnemo.url}/v1/memories", params={"user_id": USER, "limit": 500}).json()["data"])
        finally:
            for service in reversed(services):
                service.stop()
    setup = {
        "upstream": {"chunks": args.chunks, "first_chunk_ms": args.first_chunk_ms, "chunk_ms": args.chunk_ms},
        "rounds": args.rounds,
        "requests_per_block": args.requests,
        "concurrency": args.concurrency,
        "apis": args.apis,
        "litellm_apis": [api for api in args.apis if api in args.litellm_apis] if litellm_python else [],
        "serve_apis": [api for api in args.apis if api in args.serve_apis] if "serve-on" in args.targets else [],
        "seeded_memories": SEEDED,
        "memories_listed_at_end_capped_500": memories,
        "mnemo": "mnemo up subprocess, embedder.threads=1, "
        + ("redis " + args.redis_url if args.redis_url else "embedded Redis"),
        "serve": SERVE_SETUP if "serve-on" in args.targets else None,
        "litellm": "litellm[proxy]==1.108.7, 1 worker, master key, telemetry off" if litellm_python else None,
    }
    result = report.build(records, setup, started, stats.machine())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{args.name}.md").write_text(report.markdown(result))
    if args.apis == ["chat"]:  # the chart draws the chat rows; the API comparison is the page's table
        report.chart(result, args.out / f"{args.name}.png")
    print(report.markdown(result))  # noqa: T201


if __name__ == "__main__":
    main()
