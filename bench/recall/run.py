"""bench/recall: feed LOCOMO conversations through Mnemo's ingestion, ask the questions through
its retrieval, and compare evidence recall with BM25 and dense baselines over the raw turns.

    .venv/bin/python -m bench.recall.run --data ../shared/bench/locomo-sample.json [--grid]

Raw mode always runs (each turn through MemoryWriter, real embedder, real EdgeMemoryStore in a temp
dir), with per-conversation results. ``--grid`` (alias ``--sweep``, ~3.5 min on 2 cores) also
ingests every index variant (what raw mode stores, date terms, reply context) and asks each with
every query knob (SWEEP, NEW_KNOBS), then reports leave-one-conversation-out recall (bench.recall.loo):
every choice made on four conversations and scored on the fifth, the headline.
Extraction mode needs an OpenAI-compatible LLM: ``--extraction-model openai/NAME --extraction-base-url URL``;
without them it is skipped and the results say so. ``--through-import URL`` also ingests the
conversations with `mnemo import` into a running Mnemo and asks through its REST search
(bench.recall.through_import), and reports how far those numbers are from the in-process ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import mean, median
from typing import Any, Literal

import numpy as np

from bench.recall import report, through_import
from bench.recall.baselines import Bm25Index, DenseIndex
from bench.recall.locomo import Conversation, load
from bench.recall.loo import in_sample, leave_one_out
from bench.recall.metrics import Row, Scores
from gateway.injection import render_block, select_memories
from mnemo import raw_filter, speakers
from mnemo.config import ExtractionSettings, MemorySettings
from mnemo.embedding import LocalOnnxEmbedder
from mnemo.extraction import Extractor
from mnemo.imports import import_request_id
from mnemo.ingest import MemoryWriter
from mnemo.llm import build_llm
from mnemo.models import Scope
from mnemo.queue import Exchange, ExchangeMessage
from mnemo.raw_filter import RawFilter
from mnemo.retrieval import Retriever
from mnemo.store import hybrid
from mnemo.store import keywords as kw
from mnemo.store.base import StoreIdentity
from mnemo.store.edge import EdgeMemoryStore
from mnemo.store.hybrid import HybridOptions
from mnemo.store.keywords import context_line
from mnemo.tokens import build_token_counter

DEPTH = 20
RESULTS = Path(__file__).resolve().parents[1] / "results"
Mode = Literal["raw", "llm"]


def exchange_for(conversation: Conversation, index: int, mode: Mode, reply_context: bool = True) -> Exchange:
    turn = conversation.turns[index]
    # Turns keep their order inside a session: one second apart from the session's start.
    at = turn.at + timedelta(seconds=index)
    metadata: dict[str, Any] = {"speaker": turn.speaker, "session_date": turn.date, "dia_ids": [turn.dia_id]}
    previous = conversation.turns[index - 1] if index else None
    if reply_context and previous is not None and previous.session == turn.session:
        metadata["reply_to"] = f"{previous.speaker}: {previous.text}"
    return Exchange(
        # The id `mnemo import` gives the same turn: memory ids (derived from it) then match, and so do
        # the rare ties in ranking that Qdrant breaks by point id (bench.recall.through_import).
        request_id=import_request_id(conversation.sample_id, None, conversation.sample_id, turn.dia_id),
        scope=Scope(user_id=conversation.sample_id, session_id=f"session_{turn.session}"),
        model="bench",
        messages=[ExchangeMessage(role="user", content=turn.text, name=turn.speaker)],
        reply="",
        started_at=at,
        completed_at=at,
        extraction_mode=mode,
        metadata=metadata,
    )


async def ingest(
    conversations: list[Conversation], writer: MemoryWriter, mode: Mode, reply_context: bool
) -> dict[str, Any]:
    started, count, stored = time.perf_counter(), 0, []
    for conversation in conversations:
        for index in range(len(conversation.turns)):
            result = await writer.process(exchange_for(conversation, index, mode, reply_context))
            count += len(result.created)
            if result.created:
                stored.append(conversation.turns[index].text)
    seconds = time.perf_counter() - started
    return {
        "memories": count,
        "seconds": round(seconds, 1),
        "per_turn_ms": round(1000 * seconds / max(1, count), 2),
        "not_statements": not_statements(stored) if mode == "raw" else {},
    }


def not_statements(texts: list[str]) -> dict[str, int]:
    """How many stored memories were questions or small talk: by mnemo.raw_filter's rule, and by a
    plain count that does not share its word lists (every sentence ends in "?"; at most 3 words)."""
    return {
        "by_raw_filter": sum(1 for text in texts if not raw_filter.is_statement(text)),
        "only_questions_by_punctuation": sum(
            1 for text in texts if all(s.endswith("?") for s in raw_filter.sentences(text))
        ),
        "at_most_3_words": sum(1 for text in texts if len(text.split()) <= 3),
    }


async def ask(
    conversations: list[Conversation], retriever: Retriever, memory: MemorySettings, counter: Any = None
) -> tuple[dict[str, Any], list[Row]]:
    scores, tokens, injected, latency, carried = Scores(), [], [], [], []
    for conversation in conversations:
        scope = Scope(user_id=conversation.sample_id)
        for question in conversation.questions:
            started = time.perf_counter()
            found = await retriever.search(scope, question.text, limit=DEPTH, threshold=memory.score_threshold)
            hits = sorted(found, key=lambda hit: tie_order(hit.score, hit.memory.id))
            latency.append(1000 * (time.perf_counter() - started))
            scores.add(question, [hit.memory.metadata.get("dia_ids", []) for hit in hits], conversation.sample_id)
            if counter is not None:
                chosen = select_memories(hits[: memory.top_k], memory.token_budget, counter)
                tokens.append(counter(render_block(chosen)) if chosen else 0)
                injected.append(len(chosen))
                # Does the model get to see the evidence: a memory injected carries an evidence dia_id.
                given = {dia for hit in chosen for dia in hit.memory.metadata.get("dia_ids", [])}
                carried.append(bool(given & question.evidence))
    result: dict[str, Any] = {
        "recall": scores.summary(),
        "per_conversation": scores.per_conversation(),
        "search_ms_p50": round(median(latency), 2),
    }
    if tokens:
        ordered = sorted(tokens)
        result["tokens"] = {
            "mean": round(mean(tokens), 1),
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[int(len(ordered) * 0.95)],
            "max": ordered[-1],
            "memories_mean": round(mean(injected), 2),
            "evidence_injected": round(100 * mean(carried), 1),
            "top_k": memory.top_k,
            "budget": memory.token_budget,
        }
    return result, scores.rows


def retriever(embedder: LocalOnnxEmbedder, store: EdgeMemoryStore, memory: MemorySettings) -> Retriever:
    return Retriever(embedder, store, without_speaker_names=memory.search_without_speaker_names)


def tie_order(score: float, memory_id: str) -> tuple[float, str]:
    """Best first, and memories of exactly the same score by id: Qdrant orders such ties by its own
    point offsets, which differ between two stores holding the same points (see through_import)."""
    return -round(score, 6), memory_id


async def baselines(conversations: list[Conversation], embedder: LocalOnnxEmbedder) -> dict[str, Any]:
    bm25, dense = Scores(), Scores()
    for conversation in conversations:
        lines = [context_line(t.text, t.at, {"speaker": t.speaker}) for t in conversation.turns]
        groups = [[t.dia_id] for t in conversation.turns]
        keyword_index = Bm25Index(lines)
        vectors = [v for start in range(0, len(lines), 64) for v in embedder.encode(lines[start : start + 64])]
        dense_index = DenseIndex(np.asarray(vectors))
        for question in conversation.questions:
            bm25.add(question, [groups[i] for i in keyword_index.rank(question.text, DEPTH)])
            (query,) = await embedder.embed([question.text])
            dense.add(question, [groups[i] for i in dense_index.rank(query, DEPTH)])
    return {"bm25": bm25.summary(), "dense": dense.summary()}


SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("defaults (rrf k=5, keyword weight 2, 20 candidates)", {}),
    ("dense only", {"fusion": "dense"}),
    ("dbsf, 20 candidates", {"fusion": "dbsf"}),
    ("dbsf, 50 candidates", {"fusion": "dbsf", "hybrid_candidates": 50}),
    ("rrf k=5, keyword weight 1", {"keyword_weight": 1.0}),
    ("rrf k=5, keyword weight 0.5", {"keyword_weight": 0.5}),
    ("rrf k=5, keyword weight 3", {"keyword_weight": 3.0}),
    ("rrf k=10, keyword weight 2", {"rrf_k": 10}),
    ("rrf k=60, keyword weight 2", {"rrf_k": 60}),
    ("rrf, 50 candidates", {"hybrid_candidates": 50}),
    ("recency half-life 30 d", {"recency_half_life_days": 30.0}),
    ("recency half-life 365 d", {"recency_half_life_days": 365.0}),
    ("threshold 0.0", {"score_threshold": 0.0}),
    ("threshold 0.3", {"score_threshold": 0.3}),
]
# Knobs added with the leave-one-out evaluation (not in the "before" grid).
NEW_KNOBS: list[tuple[str, dict[str, Any]]] = [
    ("speaker boost 0 (off)", {"speaker_boost": 0.0}),
    ("speaker boost 0.5", {"speaker_boost": 0.5}),
    ("speaker boost 2", {"speaker_boost": 2.0}),
    ("speaker names kept in the query", {"search_without_speaker_names": False}),
    ("speaker boost only for one named speaker", {"subject_of_several": False}),
    ("names replaced by 'they'", {"stand_in": ("they", "their")}),
    ("names replaced by 'the user'", {"stand_in": ("the user", "the user's")}),
    ("names left out", {"stand_in": ("", "")}),
]
# Row keys that switch a module constant (not a setting) while the row's questions are asked.
SWITCHES: dict[str, tuple[Any, str]] = {
    "stand_in": (speakers, "STAND_IN"),
    "subject_of_several": (hybrid, "SUBJECT_OF_SEVERAL"),
}


@contextlib.contextmanager
def switched(changes: dict[str, Any]) -> Iterator[None]:
    """The row's SWITCHES set for the duration, then the shipped values back."""
    shipped = {key: getattr(*SWITCHES[key]) for key in changes if key in SWITCHES}
    try:
        for key in shipped:
            setattr(*SWITCHES[key], changes[key])
        yield
    finally:
        for key, value in shipped.items():
            setattr(*SWITCHES[key], value)


def settings_of(changes: dict[str, Any]) -> MemorySettings:
    return MemorySettings(**{key: value for key, value in changes.items() if key not in SWITCHES})


@dataclass(frozen=True)
class IndexVariant:
    """What is stored and indexed: each variant is its own store, ingested once, then asked with
    every row of SWEEP. The first is the shipped default; ``old_default`` marks what raw mode did
    before the statement filter (the "before" of the leave-one-out comparison)."""

    name: str
    raw_filter: RawFilter
    reply_context: bool = True
    old_default: bool = False
    date_terms: bool = True  # mnemo.store.keywords.DATE_TERMS


def index_variants(args: argparse.Namespace) -> list[IndexVariant]:
    reply = not args.no_reply_context
    default = IndexVariant("statements, date terms", ExtractionSettings().raw_filter, reply)
    variants = [
        default,
        IndexVariant("every message, no date terms", "all", reply, old_default=True, date_terms=False),
        IndexVariant("statements, no date terms", "statements", reply, date_terms=False),
        IndexVariant("statements, date terms, no reply context", "statements", reply_context=False),
    ]
    return variants if args.grid else [default]


@contextlib.contextmanager
def date_terms(enabled: bool) -> Iterator[None]:
    """Date terms in keyword documents and queries (mnemo.store.keywords.DATE_TERMS) on or off."""
    shipped, kw.DATE_TERMS = kw.DATE_TERMS, enabled
    try:
        yield
    finally:
        kw.DATE_TERMS = shipped


def open_store(path: Path, identity: StoreIdentity, memory: MemorySettings) -> EdgeMemoryStore:
    return EdgeMemoryStore(path, "mnemo", identity, HybridOptions.from_settings(memory))


async def run_mode(
    conversations: list[Conversation], embedder: LocalOnnxEmbedder, mode: Mode, args: argparse.Namespace
) -> dict[str, Any]:
    if mode == "raw":
        return await run_raw(conversations, embedder, args)
    memory = MemorySettings()
    identity = StoreIdentity(embedder.model_id, embedder.dimension)
    extractor = Extractor(build_llm(extraction_settings(args)))
    with tempfile.TemporaryDirectory(prefix="mnemo-recall-") as tmp:
        store = open_store(Path(tmp), identity, memory)
        await store.open()
        try:
            writer = MemoryWriter(store, embedder, extractor, mode)
            result = {"ingest": await ingest(conversations, writer, mode, not args.no_reply_context)}
            result |= (await ask(conversations, retriever(embedder, store, memory), memory, build_token_counter()))[0]
        finally:
            await store.close()
            await extractor.llm.aclose()
    return result


async def run_raw(
    conversations: list[Conversation], embedder: LocalOnnxEmbedder, args: argparse.Namespace
) -> dict[str, Any]:
    """The defaults' recall (the first store, asked first, so its latency has no cached query), then
    with ``--grid`` every index variant x SWEEP row, and the leave-one-conversation-out figures."""
    identity = StoreIdentity(embedder.model_id, embedder.dimension)
    counter = build_token_counter()
    result: dict[str, Any] = {}
    candidates: dict[str, list[Row]] = {}
    before: dict[str, list[Row]] = {}
    variants_out = []
    for number, variant in enumerate(index_variants(args)):
        with tempfile.TemporaryDirectory(prefix="mnemo-recall-") as tmp, date_terms(variant.date_terms):
            # The old default index is asked as before: without the speaker boost or the second search
            # without speaker names, both added with it.
            old: dict[str, Any] = {"speaker_boost": 0.0, "search_without_speaker_names": False}
            base = old if variant.old_default else {}
            memory = MemorySettings(**base)
            store = open_store(Path(tmp), identity, memory)
            await store.open()
            try:
                writer = MemoryWriter(store, embedder, None, "raw", raw_filter=variant.raw_filter)
                ingested = await ingest(conversations, writer, "raw", variant.reply_context)
                found, rows = await ask(conversations, retriever(embedder, store, memory), memory, counter)
            finally:
                await store.close()
            overall = found["recall"]["overall"]["any@10"]
            logging.info("%s: %s memories, any@10 %.1f", variant.name, ingested["memories"], overall)
            if number == 0:
                result = {"index_variant": variant.name, "ingest": ingested, **found}
            variants_out.append({"variant": variant.name, "ingest": ingested, **found})
            grid = args.grid
            sweep_rows = await sweep(conversations, embedder, Path(tmp), identity, counter, base) if grid else []
        # The defaults' answers from the first ask; the sweep's own defaults row only feeds its table.
        named = {SWEEP[0][0]: rows} | {row["variant"]: row["rows"] for row in sweep_rows[1:]}
        for name, answers in named.items():
            candidates[f"{variant.name}; {name}"] = answers
            if variant.old_default and name in dict(SWEEP):  # the knobs that existed before
                before[f"{variant.name}; {name}"] = answers
        for row in sweep_rows:
            row.pop("rows")
        if number == 0 and sweep_rows:
            result["sweep"] = sweep_rows
        if variant.old_default:
            result["old_default_sweep"] = sweep_rows
    result["index_variants"] = variants_out
    if args.grid:
        result["loo"] = leave_one_out(candidates)
        result["in_sample"] = in_sample(candidates)
        result["loo_before"] = leave_one_out(before)
        result["in_sample_before"] = in_sample(before)
        result["grid_size"] = len(candidates)
    return result


async def sweep(
    conversations: list[Conversation],
    embedder: LocalOnnxEmbedder,
    path: Path,
    identity: StoreIdentity,
    counter: Any,
    base: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for name, changes in [*SWEEP, *NEW_KNOBS]:
        memory = settings_of(base | changes)
        store = open_store(path, identity, memory)
        await store.open()
        try:
            with switched(changes):
                found, answers = await ask(conversations, retriever(embedder, store, memory), memory, counter)
        finally:
            await store.close()
        found.pop("per_conversation")
        rows.append({"variant": name, "settings": changes, **found, "rows": answers})
        logging.info("sweep %s: any@10 %.1f", name, found["recall"]["overall"]["any@10"])
    return rows


def run_through_import(args: argparse.Namespace, conversations: list[Conversation]) -> dict[str, Any]:
    url, key = args.through_import, args.api_key
    result = {"ingest": through_import.ingest(conversations, Path(args.data), url, key)}
    threshold = MemorySettings().score_threshold
    return result | through_import.ask(conversations, url, key, DEPTH, threshold)


def extraction_settings(args: argparse.Namespace) -> ExtractionSettings:
    return ExtractionSettings(
        mode="llm", model=args.extraction_model, base_url=args.extraction_base_url, api_key_env=args.api_key_env
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    conversations = load(Path(args.data))
    embedder = LocalOnnxEmbedder(threads=1, activations=args.activations, stored_activations=args.stored_activations)
    try:
        results: dict[str, Any] = {"run": report.run_info(args, conversations)}
        results["baselines"] = await baselines(conversations, embedder)
        results["raw"] = await run_mode(conversations, embedder, "raw", args)
        if args.through_import:
            results["raw_through_import"] = imported = await asyncio.to_thread(run_through_import, args, conversations)
            imported["largest_difference"] = through_import.compare(results["raw"]["recall"], imported["recall"])
        if args.extraction_model and args.extraction_base_url:
            results["llm"] = await run_mode(conversations, embedder, "llm", args)
        else:
            results["llm"] = {"skipped": "no --extraction-model/--extraction-base-url given"}
    finally:
        await embedder.close()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="LOCOMO-format JSON (never copied into the repo)")
    parser.add_argument(
        "--grid",
        "--sweep",
        action="store_true",
        help="also measure every index variant x fusion/knob variant, and leave-one-conversation-out recall",
    )
    parser.add_argument(
        "--no-reply-context", action="store_true", help="do not pass the previous turn as metadata.reply_to"
    )
    parser.add_argument(
        "--activations", choices=["int8", "float32"], default="int8", help="the local embedder's embedder.activations"
    )
    parser.add_argument(
        "--stored-activations",
        choices=["mixed", "int8"],
        default="mixed",
        help="the local embedder's embedder.stored_activations",
    )
    parser.add_argument("--extraction-model", help="litellm model for extraction mode, e.g. openai/gpt-4o-mini")
    parser.add_argument("--extraction-base-url", help="OpenAI-compatible base URL for extraction mode")
    parser.add_argument("--api-key-env", help="environment variable holding the extraction API key")
    parser.add_argument(
        "--through-import", metavar="URL", help="also ingest with `mnemo import` into the Mnemo at URL (raw mode)"
    )
    parser.add_argument("--api-key", help="that Mnemo's admin key, if it has keys")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where recall.json and recall.md go")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    results = asyncio.run(main(args))
    report.write(results, args.out)


if __name__ == "__main__":
    cli()
