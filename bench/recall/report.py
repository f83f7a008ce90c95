"""recall.json and recall.md: the run's provenance, Mnemo vs the baselines, tokens, the sweep."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.recall.locomo import Conversation

METRICS = ("any@1", "any@5", "any@10", "any@20", "frac@10", "mrr")
GROUPS = ("multi-hop", "temporal", "open-domain", "single-hop", "overall")


def run_info(args: argparse.Namespace, conversations: list[Conversation]) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": os.path.basename(args.data),
        "conversations": [c.sample_id for c in conversations],
        "turns": sum(len(c.turns) for c in conversations),
        "questions": sum(len(c.questions) for c in conversations),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "commit": commit,
        "embedder": {"activations": args.activations, "stored_activations": args.stored_activations},
        "note": "single process, embedder on 1 thread; other engineers' tests may share the cores",
    }


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "recall.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "recall.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))  # noqa: T201 - the bench's output is its report


def markdown(results: dict[str, Any]) -> str:
    run, raw = results["run"], results["raw"]
    lines = [
        "# bench/recall",
        "",
        f"Run {run['at']} on {run['machine']}, commit {run['commit'] or '?'}; {run['data']}: "
        f"{len(run['conversations'])} conversations, {run['turns']} turns, {run['questions']} questions "
        f"(categories 1-4 with evidence). {run['note']}. Embedder: activations "
        f"{run.get('embedder', {}).get('activations', 'int8')}, stored texts "
        f"{run.get('embedder', {}).get('stored_activations', 'int8')}.",
        "",
        "## Evidence recall (%), Mnemo raw mode vs baselines over raw turns",
        "",
        "`any@k`: a top-k result carries an evidence dia_id; `frac@10`: share of the evidence in the top 10.",
        "",
        "| group | method | " + " | ".join(METRICS) + " | n |",
        "| --- | --- | " + " | ".join("---:" for _ in METRICS) + " | ---: |",
    ]
    methods = {"Mnemo hybrid": raw["recall"], **{f"{k} baseline": v for k, v in results["baselines"].items()}}
    for group in GROUPS:
        for name, recall in methods.items():
            row = recall.get(group)
            if row:
                lines.append(f"| {group} | {name} | " + " | ".join(str(row[m]) for m in METRICS) + f" | {row['n']} |")
    lines = [*lines[:4], *loo_lines(raw), *lines[4:]]  # the headline right after the provenance
    lines += ["", *ingest_lines(raw), *token_lines(raw), *conversation_lines(raw), *variant_lines(raw)]
    lines += [*import_lines(results), *sweep_lines(raw.get("sweep", []))]
    lines += llm_lines(results)
    return "\n".join(lines) + "\n"


def loo_lines(raw: dict[str, Any]) -> list[str]:
    """The headline: recall@10 when every choice is made on four conversations and scored on the
    fifth (bench.recall.loo), before and after, with the in-sample figure beside it."""
    loo = raw.get("loo")
    if not loo:
        return ["Leave-one-conversation-out: not measured (run with `--grid`).", ""]
    lines = [
        "## Leave-one-conversation-out recall@10 (the headline)",
        "",
        f"Every choice ({raw['grid_size']} configurations: what raw mode stores, indexed context, fusion, "
        "weights, candidate counts, thresholds, recency, date terms, speaker boost, the second search without "
        "speaker names and its stand-in word) is made on four conversations by overall any@10 and "
        "scored on the fifth, rotated over all five; the held-out answers pooled per category. *Before*: raw "
        "mode storing every message, no date terms, speaker boost or search without speaker names, choosing "
        "among the knobs of the old sweep. *In-sample*: the configuration "
        "best on all five, scored on the same five.",
        "",
        "| | " + " | ".join(GROUPS) + " | per-fold mean ± spread (min–max) |",
        "| --- | " + " | ".join("---:" for _ in GROUPS) + " | --- |",
    ]
    for label, key, sample in (("before", "loo_before", "in_sample_before"), ("after", "loo", "in_sample")):
        held, best = raw[key], raw[sample]
        cells = [str(held["recall"][g]["any@10"]) if g in held["recall"] else "-" for g in GROUPS]
        spread = f"{held['fold_mean']} ± {held['fold_spread']} ({held['fold_min']}–{held['fold_max']})"
        lines.append(f"| {label}, leave-one-out | " + " | ".join(cells) + f" | {spread} |")
        cells = [str(best["recall"][g]["any@10"]) if g in best["recall"] else "-" for g in GROUPS]
        lines.append(f"| {label}, in-sample ({best['chosen']}) | " + " | ".join(cells) + " | |")
    lines += [
        "",
        "| held out | chosen on the other four | their any@10 | held-out any@10 |",
        "| --- | --- | ---: | ---: |",
    ]
    for fold in raw["loo"]["folds"]:
        lines.append(
            f"| {fold['held_out']} | {fold['chosen']} | {fold['train_any@10']} | "
            f"{fold['recall']['overall']['any@10']} |"
        )
    return [*lines, ""]


def conversation_lines(raw: dict[str, Any]) -> list[str]:
    per = raw.get("per_conversation")
    if not per:
        return []
    lines = [
        "## Per conversation (defaults), recall@10",
        "",
        "| conversation | " + " | ".join(GROUPS) + " | n |",
        "| --- | " + " | ".join("---:" for _ in GROUPS) + " | ---: |",
    ]
    for name, recall in per.items():
        cells = [str(recall[g]["any@10"]) if g in recall else "-" for g in GROUPS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {recall['overall']['n']} |")
    return [*lines, ""]


def variant_lines(raw: dict[str, Any]) -> list[str]:
    """What each way of storing and indexing costs and finds, with the default query settings."""
    variants = raw.get("index_variants", [])
    if len(variants) < 2:
        return []
    lines = [
        "## What raw mode stores and indexes (default query settings)",
        "",
        "Not statements: stored memories that `mnemo.raw_filter` calls questions or small talk; the two "
        "columns after it count without its word lists (every sentence ends in `?`; at most 3 words).",
        "",
        "| variant | memories | not statements | only questions | ≤ 3 words | any@10 | "
        + " | ".join(f"{g} @10" for g in GROUPS[:4])
        + " | tokens mean | evidence injected | search p50 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        counts, recall = v["ingest"]["not_statements"], v["recall"]
        cells = [
            v["ingest"]["memories"],
            counts["by_raw_filter"],
            counts["only_questions_by_punctuation"],
            counts["at_most_3_words"],
            recall["overall"]["any@10"],
            *[recall[g]["any@10"] if g in recall else "-" for g in GROUPS[:4]],
            v["tokens"]["mean"],
            v["tokens"].get("evidence_injected", "-"),
            v["search_ms_p50"],
        ]
        lines.append(f"| {v['variant']} | " + " | ".join(str(c) for c in cells) + " |")
    return [*lines, "", "Search p50 of the variants after the first is measured with cached query vectors.", ""]


def import_lines(results: dict[str, Any]) -> list[str]:
    """Recall through `mnemo import` and the REST search of a running Mnemo, against in-process."""
    imported = results.get("raw_through_import")
    if not imported:
        return []
    overall, here = imported["recall"]["overall"], results["raw"]["recall"]["overall"]
    worst = imported["largest_difference"]
    return [
        f"Through `mnemo import` into a running `mnemo up` and its REST search: {imported['ingest']['memories']} "
        f"memories imported in {imported['ingest']['seconds']} s; overall any@10 {overall['any@10']} (in-process "
        f"{here['any@10']}), mrr {overall['mrr']} ({here['mrr']}); largest difference over every group and metric: "
        + ", ".join(f"{metric} {points}" for metric, points in sorted(worst.items()))
        + " points.",
        "",
    ]


def ingest_lines(raw: dict[str, Any]) -> list[str]:
    ingest = raw["ingest"]
    return [
        f"Ingestion (MemoryWriter, raw mode, real embedder, EdgeMemoryStore): {ingest['memories']} memories in "
        f"{ingest['seconds']} s ({ingest['per_turn_ms']} ms per turn). Retrieval (embed + hybrid search, "
        f"~550 memories per user): p50 {raw['search_ms_p50']} ms.",
        "",
    ]


def token_lines(raw: dict[str, Any]) -> list[str]:
    t = raw.get("tokens")
    if not t:
        return []
    return [
        f"Tokens injected per question (gateway.injection.select_memories, top_k {t['top_k']}, budget "
        f"{t['budget']}, cl100k): mean {t['mean']}, p50 {t['p50']}, p95 {t['p95']}, max {t['max']}; "
        f"{t['memories_mean']} memories on average; evidence among the injected memories for "
        f"{t.get('evidence_injected', '-')}% of the questions.",
        "",
    ]


def sweep_lines(sweep: list[dict[str, Any]]) -> list[str]:
    if not sweep:
        return []
    lines = [
        "## Sweep (same store, one knob changed from the defaults)",
        "",
        "| variant | any@1 | any@5 | any@10 | any@20 | mrr | "
        + " | ".join(f"{g} @10" for g in GROUPS[:4])
        + " | tokens mean | evidence injected |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sweep:
        overall, recall = row["recall"]["overall"], row["recall"]
        cells = [overall[m] for m in ("any@1", "any@5", "any@10", "any@20", "mrr")]
        cells += [recall[g]["any@10"] if g in recall else "-" for g in GROUPS[:4]]
        cells.append(row.get("tokens", {}).get("mean", "-"))
        cells.append(row.get("tokens", {}).get("evidence_injected", "-"))
        lines.append(f"| {row['variant']} | " + " | ".join(str(c) for c in cells) + " |")
    return [*lines, ""]


def llm_lines(results: dict[str, Any]) -> list[str]:
    llm = results.get("llm", {})
    if "skipped" in llm:
        return [f"Extraction mode: skipped ({llm['skipped']}).", ""]
    overall = llm["recall"]["overall"]
    return [
        f"Extraction mode: any@10 {overall['any@10']}, mrr {overall['mrr']} ({llm['ingest']['memories']} memories).",
        "",
    ]
