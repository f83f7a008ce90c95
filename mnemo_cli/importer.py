"""``mnemo import FILE --user ID``: a chat history (ChatGPT or Claude export, LOCOMO, JSONL) into
a running Mnemo's memory, through its REST API (POST /v1/imports), the same queue and worker as
live chats.

The file is read twice, never whole: a first pass counts it and spools its exchanges to a
temporary file with an index per conversation (mnemo.import_formats.spool), a second sends them
oldest conversation first, in batches, at the pace the server allows (it answers 429
import_backpressure while the user has ``imports.max_pending`` exchanges waiting). Each
exchange's request id derives from the file's own ids, so a run killed half-way is resumed by
running it again: what was sent before is counted as already imported, nothing is written twice.
``--dry-run`` prints the counts and the LLM cost estimate and sends nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mnemo.import_formats import FORMATS, ImportFormatError, ImportStats, PastExchange, Spool, read_conversations
from mnemo.import_formats import resolve_format as resolve
from mnemo_cli.api import ApiError, MnemoApi
from mnemo_cli.import_progress import Progress, duration

BATCH = 100  # exchanges per request (the server takes at most 200)
BATCH_BYTES = 2 * 1024 * 1024  # and at most about this much JSON (server.max_body_bytes is 10 MiB by default)
POLL_S = 0.5
UNAVAILABLE_TRIES = 5  # a 503 (Redis or the store away for a moment) is retried this often, backing off
FINISHED = ("done", "erased")


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser(
        "import", parents=[common], help="import a chat history (ChatGPT/Claude export, LOCOMO, JSONL) into memory"
    )
    command.add_argument("file", type=Path, help="conversations.json (or the export's zip), a LOCOMO JSON, a .jsonl")
    command.add_argument("--user", required=True, help="the user id the memories belong to")
    command.add_argument("--agent", help="the agent id the memories belong to (default: none, shared by every agent)")
    command.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="default: detected from the file")
    command.add_argument("--mode", choices=("raw", "llm"), help="extraction mode (default: the worker's)")
    command.add_argument("--dry-run", action="store_true", help="count and estimate the LLM cost; send nothing")
    command.add_argument("--speaker", help="LOCOMO: the speaker who is the user (default: every turn is the user's)")
    command.add_argument("--conversation", help="import only this conversation (its id in the file)")
    command.add_argument("--batch", type=int, default=BATCH, help=f"exchanges per request (default {BATCH})")
    command.add_argument("--no-wait", action="store_true", help="return once everything is queued, not applied")
    command.set_defaults(handler=None)


def run(args: argparse.Namespace) -> int:
    try:
        fmt = resolve(args.file, args.format)
        with Spool() as spool:
            for conversation in read_conversations(args.file, fmt, speaker=args.speaker, only=args.conversation):
                spool.add_conversation(conversation)
            say(describe(args.file, fmt, spool.stats))
            with MnemoApi(args.url, args.api_key, args.timeout) as api:
                if args.dry_run:
                    return dry_run(api, args, spool.stats)
                return send(api, args, fmt, spool)
    except ImportFormatError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except ApiError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except OSError as exc:
        print(f"mnemo: {args.file}: {exc.strerror or exc}", file=sys.stderr)  # noqa: T201
        return 2


def say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201  # progress and counts on stderr: stdout is the result


def describe(path: Path, fmt: str, stats: ImportStats) -> str:
    span = ""
    if stats.first is not None and stats.last is not None:
        span = f", {stats.first.date().isoformat()} to {stats.last.date().isoformat()}"
    return (
        f"{path}: {fmt}, {stats.conversations} conversations, {stats.exchanges} exchanges "
        f"({stats.characters} characters with their context){span}"
    )


def dry_run(api: MnemoApi, args: argparse.Namespace, stats: ImportStats) -> int:
    counts = {"exchanges": stats.exchanges, "characters": stats.characters}
    found: dict[str, Any] = {"object": "import.dry_run", **counts, "conversations": stats.conversations}
    try:
        cost = api.get("/v1/imports/estimate", {**counts, "mode": args.mode})
    except ApiError as exc:
        found["estimate"] = None
        text = f"no estimate: {exc}"
    else:
        found["estimate"] = cost
        text = (
            f"would cost ({cost['mode']} mode): about {cost['llm_calls']} LLM calls, {cost['prompt_tokens']} prompt "
            f"and {cost['completion_tokens']} completion tokens, {cost['embeddings']} embeddings\n"
            f"  estimated from {cost['basis']}"
        )
    print(json.dumps(found, indent=2) if args.json else f"{text}\ndry run: nothing was sent")  # noqa: T201
    return 0


def batches(exchanges: Iterable[PastExchange], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    weight = 0
    for exchange in exchanges:
        item = exchange.to_json()
        item_bytes = len(json.dumps(item, ensure_ascii=False).encode())
        if batch and (len(batch) >= size or weight + item_bytes > BATCH_BYTES):
            yield batch
            batch, weight = [], 0
        batch.append(item)
        weight += item_bytes
    yield batch  # possibly empty: the last request says the input is complete


def send(api: MnemoApi, args: argparse.Namespace, fmt: str, spool: Spool) -> int:
    scope = {"user_id": args.user, "agent_id": args.agent}
    record = api.post("/v1/imports", {**scope, "mode": args.mode, "format": fmt})
    path = f"/v1/imports/{quote(record['id'], safe='')}"
    progress = Progress(spool.stats.exchanges, sys.stderr)
    say(f"import {record['id']} for {args.user}")
    size = max(1, min(args.batch, 200))
    pending = batches(spool.ordered(), size)
    batch = next(pending)
    while True:
        following = next(pending, None)  # one ahead: the last batch says it is the last
        body = {**scope, "exchanges": batch, "final": following is None}
        try:
            record = post_batch(api, path, body, progress, record)["import"]
        except ApiError as exc:
            if exc.code != "user_erased":
                raise
            record = api.get(path)  # erased since the import started: it is over
        progress.update(record)
        if following is None or record["status"] == "erased":
            break
        batch = following
    while not args.no_wait and record["status"] not in FINISHED:
        time.sleep(POLL_S)
        record = api.get(path)
        progress.update(record)
    progress.update(record, force=True)
    progress.close()
    return summary(args, record, time.monotonic() - progress.started)


def post_batch(api: MnemoApi, path: str, body: dict[str, Any], progress: Progress, record: dict[str, Any]) -> Any:
    """Send a batch; while the server holds it back (429), wait as told, showing progress. A 503
    is retried a few times (a batch sent twice is de-duplicated by its request ids)."""
    unavailable = 0
    while True:
        try:
            return api.post(path + "/exchanges", body)
        except ApiError as exc:
            if exc.status == 503 and unavailable < UNAVAILABLE_TRIES:
                unavailable += 1
                time.sleep(2 ** (unavailable - 1))
                continue
            if exc.status != 429:
                raise
            until = time.monotonic() + (exc.retry_after or 1.0)
            while (left := until - time.monotonic()) > 0:
                time.sleep(min(POLL_S, left))
                record = api.get(path)
                progress.update(record)


def summary(args: argparse.Namespace, record: dict[str, Any], seconds: float) -> int:
    if args.json:
        print(json.dumps(record, indent=2))  # noqa: T201
    else:
        print(  # noqa: T201
            f"import {record['id']} {record['status']} in {duration(seconds)}: {record['submitted']} exchanges sent, "
            f"{record['queued']} queued, {record['duplicates']} already imported, {record['applied']} applied "
            f"({record['memories']} memories), {record['failed']} failed, {record['dropped'] + record['refused']} "
            f"dropped by an erasure, {record['pending']} still waiting"
        )
    if record["status"] == "erased":
        print(f"mnemo: {args.user} was erased during the import: nothing of it is kept", file=sys.stderr)  # noqa: T201
        return 1
    return 0
