"""bench/search: ingest and search latency at 10k and 100k memories (1,000 users), for the
embedded store, the server-mode code path on qdrant-client's local mode, and Mem0's
``Memory.search`` (its own virtualenv, offline, same model, same texts and queries).

    .venv/bin/python -m bench.search.run [--sizes 10000 100000] [--queries 500] [--quick]

Writes bench/results/search.{json,md,png}. Embeddings of the corpus are cached in bench/.cache
(gitignored); ingest throughput is measured fresh on every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench import facts, stats, venvs
from bench.search import report
from mnemo.config import Settings, StoreSettings
from mnemo.embedding import LocalOnnxEmbedder
from mnemo.models import Memory, Scope, utcnow
from mnemo.store import MemoryStore, StoreIdentity
from mnemo.store.dense_cache import DenseCache
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.server import QdrantServerMemoryStore
from mnemo_cli.run import run_on_loop

logger = logging.getLogger("bench.search")

BENCH = Path(__file__).resolve().parents[1]
CACHE = BENCH / ".cache"
USERS = 1000
ONE_USER = "one-user"
LIMIT = 10
EMBED_BATCH = 64

Vectors = np.ndarray[Any, np.dtype[np.float32]]


def corpus_of(size: int, largest: int) -> list[facts.Fact]:
    """The first size/USERS facts of each user in the largest corpus: smaller stores are subsets."""
    per_user = size // USERS
    everything = facts.corpus(USERS, largest)
    return [fact for index, fact in enumerate(everything) if index % (largest // USERS) < per_user]


def cached_vectors(embedder: LocalOnnxEmbedder, texts: list[str], name: str) -> Vectors:
    path = CACHE / f"{name}.npy"
    if path.exists():
        cached: Vectors = np.load(path)
        if len(cached) == len(texts):
            return cached
    logger.info("embedding %d texts once (cached in %s)", len(texts), path)
    # Batched (slightly batch-dependent int8 vectors): this is test data, and latency does not depend on it.
    parts = [embedder.encode(texts[i : i + EMBED_BATCH], batched=True) for i in range(0, len(texts), EMBED_BATCH)]
    matrix = np.concatenate(parts).astype(np.float32)
    CACHE.mkdir(exist_ok=True)
    np.save(path, matrix)
    return matrix


def embed_throughput(embedder: LocalOnnxEmbedder, texts: list[str]) -> float:
    """Texts per second as the worker embeds memories: one text per forward pass for int8."""
    started = time.perf_counter()
    for i in range(0, len(texts), EMBED_BATCH):
        embedder.encode(texts[i : i + EMBED_BATCH])
    return round(len(texts) / (time.perf_counter() - started), 1)


def memories_of(corpus: list[facts.Fact]) -> list[Memory]:
    now = utcnow()
    return [Memory(id=str(uuid.uuid4()), text=f.text, user_id=f.user_id, created_at=now, actor="api") for f in corpus]


async def ingest(store: MemoryStore, memories: list[Memory], vectors: Vectors, batch: int = 1000) -> dict[str, float]:
    started = time.perf_counter()
    for start in range(0, len(memories), batch):
        rows = vectors[start : start + batch]
        await store.upsert(memories[start : start + batch], rows.tolist())
    seconds = time.perf_counter() - started
    return {"points": len(memories), "seconds": round(seconds, 2), "points_per_s": round(len(memories) / seconds, 1)}


async def search_pass(
    store: MemoryStore, embedder: LocalOnnxEmbedder, queries: list[tuple[str, str]], hybrid: bool = True
) -> dict[str, Any]:
    embed_ms, search_ms, dense_ms, total_ms, hits = [], [], [], [], 0
    for user, query in queries:
        scope = Scope(user_id=user)
        t0 = time.perf_counter()
        vector = await embedder.embed_query(query)
        t1 = time.perf_counter()
        found = await store.search(scope, vector, limit=LIMIT, query_text=query if hybrid else None)
        t2 = time.perf_counter()
        await store.search(scope, vector, limit=LIMIT)  # dense only, for the cost of the keyword side
        dense_ms.append((time.perf_counter() - t2) * 1000)
        embed_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
        hits += len(found)
    return {
        "embed_ms": stats.summary(embed_ms),
        "search_ms": stats.summary(search_ms),
        "dense_only_search_ms": stats.summary(dense_ms),
        "end_to_end_ms": stats.summary(total_ms),
        "mean_hits": round(hits / max(1, len(queries)), 2),
    }


def pick_queries(corpus: list[facts.Fact], count: int, seed: int, offset: int = 0) -> list[tuple[str, str]]:
    """Questions about a random user's own facts, each made unique so no cache answers it."""
    rng = random.Random(seed)
    return [(f.user_id, f"{f.question} (#{offset + n})") for n, f in enumerate(rng.choices(corpus, k=count))]


def run_mem0(size: int, corpus: list[facts.Fact], queries: list[tuple[str, str]], add_sample: int) -> dict[str, Any]:
    python = venvs.mem0_python()
    digest = hashlib.sha256("\n".join(f"{f.user_id}\t{f.text}" for f in corpus).encode()).hexdigest()[:12]
    directory = CACHE / f"mem0-{size}-{digest}"
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "dir": str(directory),
        "facts": [[f.user_id, f.text] for f in corpus],
        "add_sample": add_sample,
        "limit": LIMIT,
        "warmup": [[u, q + " warm-up"] for u, q in queries[:10]],
        "queries": [list(q) for q in queries],
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [str(python), str(BENCH / "mem0_peer.py"), "search", str(spec_path), str(out_path)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        raw = json.loads(out_path.read_text())
    summary = {key: stats.summary(raw.pop(key)) for key in ("embed_ms", "vector_search_ms", "search_ms") if key in raw}
    return {**raw, **summary, "end_to_end_ms": summary.get("search_ms")}


async def mnemo_store(kind: str, directory: Path, identity: StoreIdentity) -> MemoryStore:
    if kind == "edge":
        store: MemoryStore = EdgeMemoryStore(directory / "edge", "bench", identity)
    else:
        store = QdrantServerMemoryStore(StoreSettings(kind="qdrant", path=str(directory / "local")), identity)
    await store.open()
    return store


async def measure_mnemo(
    kind: str,
    size: int,
    corpus: list[facts.Fact],
    vectors: Vectors,
    queries: list[list[tuple[str, str]]],
    embedder: LocalOnnxEmbedder,
) -> dict[str, Any]:
    identity = StoreIdentity(embedder.model_id, embedder.dimension)
    with tempfile.TemporaryDirectory(prefix=f"bench-search-{kind}-") as tmp:
        store = await mnemo_store(kind, Path(tmp), identity)
        try:
            ingested = await ingest(store, memories_of(corpus), vectors)
            await search_pass(store, embedder, [(u, q + " warm-up") for u, q in queries[0][:10]])
            passes = [await search_pass(store, embedder, batch) for batch in queries]
        finally:
            await store.close()
    return {"store": kind, "size": size, "ingest": ingested, "passes": passes}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    embedder = LocalOnnxEmbedder(threads=1)
    largest = max(args.sizes)
    everything = facts.corpus(USERS, largest)
    all_vectors = cached_vectors(embedder, [f.text for f in everything], f"{embedder.model_id}-{USERS}u-{largest}")
    throughput = embed_throughput(embedder, [f.text for f in everything[: args.embed_sample]])
    results: list[dict[str, Any]] = []
    for size in sorted(args.sizes):
        per_user, stride = size // USERS, largest // USERS
        keep = [i for i in range(largest) if i % stride < per_user]
        corpus, vectors = [everything[i] for i in keep], all_vectors[keep]
        count = args.queries if size <= 100_000 else args.queries // 2
        queries = [pick_queries(corpus, count, seed=size + r, offset=r * count) for r in range(args.rounds)]
        rows: list[dict[str, Any]] = []
        for round_, batch in enumerate(queries):
            # Mnemo and Mem0 alternate round by round, so a burst of load on the machine hits both.
            if round_ == 0:
                rows.append(await measure_mnemo("edge", size, corpus, vectors, queries, embedder))
                logger.info("edge %d: %s", size, rows[-1]["passes"][0]["end_to_end_ms"])
            if size in args.mem0_sizes:
                peer = run_mem0(size, corpus, batch, args.add_sample)
                rows.append({"store": "mem0", "size": size, "round": round_, **peer})
                logger.info("mem0 %d round %d: %s", size, round_, peer["end_to_end_ms"])
        if size in args.local_sizes:
            # Fresh questions: the embedder caches repeated queries, so reusing the edge store's would time the cache.
            local_queries = [pick_queries(corpus, args.local_queries, seed=size + 99, offset=10**6)]
            rows.append(await measure_mnemo("qdrant-local", size, corpus, vectors, local_queries, embedder))
        results += rows
    one_user = await measure_one_user(everything, all_vectors, args.one_user_sizes, args.local_queries, embedder)
    await embedder.close()
    variants = [await embedder_variant(activations, queries[0]) for activations in ("int8", "float32")]
    return {"embed_texts_per_s": throughput, "rows": results, "embedders": variants, "one_user": one_user}


async def measure_one_user(
    everything: list[facts.Fact], vectors: Vectors, sizes: list[int], count: int, embedder: LocalOnnxEmbedder
) -> list[dict[str, Any]]:
    """One user holding more and more memories, in the embedded store: it searches a user's
    memories without a vector index (it is never optimised), so the time grows with them."""
    identity = StoreIdentity(embedder.model_id, embedder.dimension)
    corpus = [facts.Fact(ONE_USER, fact.text, fact.question) for fact in everything]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-search-one-user-") as tmp:
        # The same memories in two stores: one scanned by Edge, one with the user's vectors in memory.
        scanned = EdgeMemoryStore(Path(tmp) / "scan", "bench", identity)
        cache = DenseCache(identity.dimension, min_memories=1, max_bytes=2**31)
        cached = EdgeMemoryStore(Path(tmp) / "cached", "bench", identity, dense_cache=cache)
        for store in (scanned, cached):
            await store.open()
        try:
            held = 0
            for size in sorted(size for size in sizes if size <= len(corpus)):
                memories = memories_of(corpus[held:size])
                for store in (scanned, cached):
                    await ingest(store, memories, vectors[held:size])
                held = size
                queries = pick_queries(corpus[:size], count, seed=size, offset=2 * 10**6 + size)
                await cached.search(Scope(user_id=ONE_USER), vectors[0].tolist(), limit=LIMIT)  # starts the load
                await cached.wait_for_vector_loads()
                row = {"size": size, **await search_pass(scanned, embedder, queries)}
                row["vector_cache"] = await search_pass(cached, embedder, queries)
                rows.append(row)
                cached_ms = row["vector_cache"]["search_ms"]
                logger.info("one user holding %d: %s, with the vector cache %s", size, row["search_ms"], cached_ms)
        finally:
            for store in (scanned, cached):
                await store.close()
    return rows


async def embedder_variant(activations: Literal["int8", "float32"], queries: list[tuple[str, str]]) -> dict[str, Any]:
    """Both `embedder.activations` variants on the same fresh queries, for the README's table."""
    embedder = LocalOnnxEmbedder(threads=1, activations=activations)
    try:
        await embedder.embed_query("warm-up question about my sister")
        timings = []
        for _, query in queries:
            started = time.perf_counter()
            await embedder.embed_query(query + " (variant)")
            timings.append((time.perf_counter() - started) * 1000)
        stored = [query for _, query in queries[:200]]
        started = time.perf_counter()
        await embedder.embed(stored, background=True)
        per_s = len(stored) / (time.perf_counter() - started)
    finally:
        await embedder.close()
    return {"activations": activations, "query_ms": stats.summary(timings), "stored_texts_per_s": round(per_s, 1)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Search latency and scale: Mnemo's stores vs Mem0.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--mem0-sizes", type=int, nargs="*", default=[10_000])
    parser.add_argument("--local-sizes", type=int, nargs="*", default=[10_000])
    parser.add_argument("--queries", type=int, default=300, help="queries per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-queries", type=int, default=100)
    parser.add_argument("--add-sample", type=int, default=200, help="Mem0 adds timed one by one (infer=False)")
    parser.add_argument("--embed-sample", type=int, default=2000)
    parser.add_argument("--one-user-sizes", type=int, nargs="*", default=[1000, 5000, 20_000])
    parser.add_argument("--quick", action="store_true", help="smoke test: 2k memories, 50 queries")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.mem0_sizes, args.local_sizes = [2000], [2000], [2000]
        args.queries, args.local_queries, args.add_sample, args.embed_sample, args.rounds = 50, 20, 20, 200, 1
        args.one_user_sizes = [500, 2000]
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    started = stats.machine()
    # On the loop the gateway runs on by default: the embedder hand-off is part of what is timed.
    measured = run_on_loop(run(args), Settings().event_loop)
    result = report.build(
        measured, vars(args) | {"out": str(args.out), "users": USERS, "limit": LIMIT}, started, stats.machine()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps(result, indent=1))
    (args.out / "search.md").write_text(report.markdown(result))
    report.chart(result, args.out / "search.png")
    print(report.markdown(result))  # noqa: T201


if __name__ == "__main__":
    main()
