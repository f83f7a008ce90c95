"""The load client: a closed loop of ``concurrency`` httpx connections sending requests of one
model API (chat by default), timing time-to-first-token (first body bytes of a stream; the whole
body otherwise) and total. A reply counts only when it is whole (see bench.overhead.apis); the
first few that are not are kept, request and answer, for the results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from bench.overhead.apis import CHAT, Api

FAILURE_SAMPLES = 3


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # base URL ending in /v1
    headers: dict[str, str]
    api: Api = CHAT


@dataclass
class Block:
    """One target at one concurrency and one streaming mode, in one round."""

    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0
    with_memories: int = 0
    wall_s: float = 0.0
    failures: list[dict[str, object]] = field(default_factory=list)  # the first few, for the report


async def one_request(client: httpx.AsyncClient, target: Target, body: dict[str, object], block: Block) -> None:
    started = time.perf_counter()
    first: float | None = None
    parts: list[bytes] = []
    status: int | str = "no reply"
    try:
        async with client.stream("POST", target.url + target.api.path, json=body, headers=target.headers) as reply:
            async for part in reply.aiter_raw():
                if first is None:
                    first = time.perf_counter()
                parts.append(part)
            status = reply.status_code
            if reply.headers.get("x-mnemo-memories", "0") != "0":
                block.with_memories += 1
    except httpx.HTTPError as error:
        status = f"{type(error).__name__}: {error}"
    done = time.perf_counter()
    content = b"".join(parts)
    if status != 200 or not target.api.complete(content, bool(body.get("stream"))):
        block.errors += 1
        if len(block.failures) < FAILURE_SAMPLES:
            answer = content[:600].decode(errors="replace")
            block.failures.append({"status": status, "request": body, "answer": answer})
        return
    block.total_ms.append((done - started) * 1000)
    block.ttft_ms.append(((first if body.get("stream") and first else done) - started) * 1000)


async def run_block(
    client: httpx.AsyncClient, target: Target, bodies: Iterator[dict[str, object]], count: int, concurrency: int
) -> Block:
    block = Block()
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one_request(client, target, next(bodies), block)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    block.wall_s = time.perf_counter() - started
    return block


def new_client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0))
