"""Summaries, goals, the Markdown table and the chart of bench/search."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

from bench import stats

GOAL_RATIO = 0.25
GOAL_P50_MS = 5.0
GOAL_SIZE = 100_000


def _med(rows: list[dict[str, Any]], key: str, q: str) -> float:
    values = [row[key][q] for row in rows if row.get(key)]
    return round(median(values), 3) if values else float("nan")


def summarise(measured: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in measured["rows"]:
        if row["store"] == "mem0":
            continue
        passes = row["passes"]
        entry = {
            "store": row["store"],
            "size": row["size"],
            "queries": sum(p["end_to_end_ms"]["n"] for p in passes),
            "ingest_points_per_s": row["ingest"]["points_per_s"],
            "mean_hits": passes[0]["mean_hits"],
        }
        for key in ("embed_ms", "search_ms", "dense_only_search_ms", "end_to_end_ms"):
            entry[key] = {q: _med(passes, key, q) for q in ("p50", "p99")}
        out.append(entry)
    sizes = sorted({row["size"] for row in measured["rows"] if row["store"] == "mem0"})
    for size in sizes:
        rounds = [row for row in measured["rows"] if row["store"] == "mem0" and row["size"] == size]
        entry = {
            "store": "mem0",
            "size": size,
            "queries": sum(r["search_ms"]["n"] for r in rounds),
            "ingest_points_per_s": rounds[0].get("add_infer_false_per_s"),
            "mean_hits": rounds[0]["mean_hits"],
            "bulk_load": rounds[0].get("bulk_load"),
            "reused_store": rounds[0].get("reused_store", False),
        }
        for key, theirs in (
            ("embed_ms", "embed_ms"),
            ("search_ms", "vector_search_ms"),
            ("end_to_end_ms", "search_ms"),
        ):
            entry[key] = {q: _med(rounds, theirs, q) for q in ("p50", "p99")}
        out.append(entry)
    return out


def goals(summary: list[dict[str, Any]], measured: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    edge = {row["size"]: row for row in summary if row["store"] == "edge"}
    for peer in (row for row in summary if row["store"] == "mem0"):
        mine = edge.get(peer["size"])
        if mine is None:
            continue
        per_round = []
        edge_row = next(r for r in measured["rows"] if r["store"] == "edge" and r["size"] == peer["size"])
        for r in measured["rows"]:
            if r["store"] == "mem0" and r["size"] == peer["size"] and r["round"] < len(edge_row["passes"]):
                per_round.append(edge_row["passes"][r["round"]]["end_to_end_ms"]["p50"] / r["search_ms"]["p50"])
        value = round(median(per_round), 3) if per_round else None
        checks.append(
            {
                "goal": f"Mnemo embed+search p50 <= {GOAL_RATIO} x Mem0 Memory.search p50",
                "size": peer["size"],
                "mnemo_ms": mine["end_to_end_ms"]["p50"],
                "mem0_ms": peer["end_to_end_ms"]["p50"],
                "ratio": value,
                "met": value is not None and value <= GOAL_RATIO,
            }
        )
    big = edge.get(GOAL_SIZE)
    if big is not None:
        checks.append(
            {
                "goal": f"Mnemo embed+search p50 <= {GOAL_P50_MS} ms at {GOAL_SIZE:,}",
                "size": GOAL_SIZE,
                "mnemo_ms": big["end_to_end_ms"]["p50"],
                "ratio": stats.ratio(big["end_to_end_ms"]["p50"], GOAL_P50_MS),
                "met": big["end_to_end_ms"]["p50"] <= GOAL_P50_MS,
            }
        )
    return checks


def build(
    measured: dict[str, Any], setup: dict[str, Any], start: dict[str, Any], end: dict[str, Any]
) -> dict[str, Any]:
    summary = summarise(measured)
    return {
        "bench": "search",
        "machine_start": start,
        "machine_end": end,
        "setup": setup,
        "embed_texts_per_s": measured["embed_texts_per_s"],
        "embedders": measured.get("embedders", []),
        "one_user": measured.get("one_user", []),
        "summary": summary,
        "goals": goals(summary, measured),
        "raw": measured["rows"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Search latency and scale",
        "",
        stats.machine_sentence(result) + " "
        f"{result['setup']['users']:,} users, "
        f"top {result['setup']['limit']}, one query at a time. Mnemo's embedder (MiniLM, int8 graph, 1 thread) embeds "
        f"{result['embed_texts_per_s']} texts/s one per forward pass, as memories are stored. Times in ms.",
        "",
        "| store | memories | ingest points/s | embed p50 | embed p99 | search p50 | search p99 "
        "| dense-only search p50 | embed+search p50 | embed+search p99 | queries |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        dense = row.get("dense_only_search_ms", {}).get("p50", "")
        lines.append(
            f"| {row['store']} | {row['size']:,} | {row['ingest_points_per_s']} | {row['embed_ms']['p50']} | "
            f"{row['embed_ms']['p99']} | {row['search_ms']['p50']} | {row['search_ms']['p99']} | {dense} | "
            f"{row['end_to_end_ms']['p50']} | {row['end_to_end_ms']['p99']} | {row['queries']} |"
        )
    for row in result["summary"]:
        if row["store"] == "mem0":
            load = row.get("bulk_load") or {}
            lines += [
                "",
                f"Mem0 at {row['size']:,}: ingest points/s is `Memory.add(infer=False)` one by one; the rest of "
                f"its store was written in batches ({load.get('points', '?')} points in {load.get('seconds', '?')} s)"
                + (", by an earlier run (the loaded store is cached in bench/.cache)." if row["reused_store"] else ".")
                + " Its *search* column is the vector-store search inside `Memory.search` (Qdrant local mode).",
            ]
    if result.get("embedders"):
        lines += [
            "",
            "## Embedder variants (`embedder.activations`), same queries",
            "",
            "| activations | query p50 | query p99 | stored texts/s |",
            "|---|---|---|---|",
        ]
        for variant in result["embedders"]:
            lines.append(
                f"| {variant['activations']} | {variant['query_ms']['p50']} | {variant['query_ms']['p99']} | "
                f"{variant['stored_texts_per_s']} |"
            )
    if result.get("one_user"):
        lines += [
            "",
            "## One user holding many memories (embedded store)",
            "",
            "Qdrant Edge searches one user's memories without a vector index (the store is never optimised), "
            "so the search time grows with what that user holds. *Vector cache*: the same memories in a store "
            "that keeps the user's dense vectors in memory (`store.vector_cache_min_memories`) and has Edge "
            "score only the nearest ones. Hybrid search unless marked dense-only; times in ms.",
            "",
            "| one user's memories | query embed p50 | search p50 | search p99 | dense-only p50 | "
            "vector cache: search p50 | vector cache: search p99 | vector cache: dense-only p50 | queries |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["one_user"]:
            cached = row.get("vector_cache") or {}
            cells = [
                f"{row['size']:,}",
                row["embed_ms"]["p50"],  # the cached pass asks the same questions: its embeddings are cache hits
                row["search_ms"]["p50"],
                row["search_ms"]["p99"],
                row["dense_only_search_ms"]["p50"],
                cached.get("search_ms", {}).get("p50", ""),
                cached.get("search_ms", {}).get("p99", ""),
                cached.get("dense_only_search_ms", {}).get("p50", ""),
                row["search_ms"]["n"],
            ]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += ["", "## Goals", "", "| goal | memories | Mnemo | Mem0 | ratio | met |", "|---|---|---|---|---|---|"]
    for check in result["goals"]:
        lines.append(
            f"| {check['goal']} | {check['size']:,} | {check['mnemo_ms']} | {check.get('mem0_ms', '')} | "
            f"{check['ratio']} | {'yes' if check['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for index, store in enumerate(dict.fromkeys(row["store"] for row in result["summary"])):
        rows = sorted((r for r in result["summary"] if r["store"] == store), key=lambda r: r["size"])
        xs = [r["size"] for r in rows]
        color = f"C{index}"
        axis.plot(xs, [r["end_to_end_ms"]["p50"] for r in rows], "o-", color=color, label=f"{store} embed+search p50")
        axis.plot(xs, [r["end_to_end_ms"]["p99"] for r in rows], "x--", color=color, alpha=0.6, label=f"{store} p99")
        axis.plot(xs, [r["search_ms"]["p50"] for r in rows], "s:", color=color, alpha=0.8, label=f"{store} search p50")
    axis.set_xscale("log")
    axis.set_yscale("log")
    sizes = sorted({row["size"] for row in result["summary"]})
    axis.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axis.set_xlabel("memories in the store (1,000 users)")
    axis.set_ylabel("ms per query (log scale)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    start = result["machine_start"]
    axis.set_title(f"Search latency, {start['cpus']}-CPU shared machine, load {start['load_average'][0]} at start")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
