"""``mnemo memories …`` and ``mnemo users …``: operating a running Mnemo through its REST API.

Readable tables by default, the API's JSON with ``--json``. Irreversible erasures ask for
``--yes`` instead of prompting, so scripts never hang on a question.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from mnemo_cli.api import ApiError, MnemoApi, default_api_key, default_url
from mnemo_cli.table import Column, render_fields, render_table, short_time

Handler = Callable[[MnemoApi, argparse.Namespace], None]

MEMORY_COLUMNS = (
    Column("id", lambda m: m["id"], 36),
    Column("text", lambda m: m["text"], 60),
    Column("agent", lambda m: m.get("agent_id") or "-", 16),
    Column("v", lambda m: m.get("version"), 3),
    Column("created", lambda m: short_time(m.get("created_at")), 19),
    Column("state", lambda m: "invalidated" if m.get("invalid_at") else "current", 11),
)
SCORED_COLUMNS = (Column("score", lambda m: f"{m['score']:.3f}", 6), *MEMORY_COLUMNS[:5])
EVENT_COLUMNS = (
    Column("time", lambda e: short_time(e.get("created_at")), 19),
    Column("action", lambda e: e["action"], 7),
    Column("memory", lambda e: e["memory_id"], 36),
    Column("text", lambda e: e.get("new_text") or e.get("old_text"), 40),
    Column("reason", lambda e: e.get("reason"), 30),
    Column("actor", lambda e: e.get("actor"), 6),
)
MEMORY_FIELDS = (
    *("id", "text", "user_id", "agent_id", "session_id", "version", "created_at", "invalid_at"),
    *("supersedes", "superseded_by", "source_request_id", "actor", "metadata"),
)


def client_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=default_url(), help="Mnemo's base URL (MNEMO_URL; default %(default)s)")
    options.add_argument(
        "--api-key", default=default_api_key(), help="admin key, sent as X-Mnemo-Api-Key (MNEMO_API_KEY)"
    )
    options.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    options.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for Mnemo (default 30)")
    return options


def add_commands(commands: Any) -> None:
    common = client_options()
    memories = commands.add_parser("memories", help="list, search, show and delete a running Mnemo's memories")
    actions = memories.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="a user's memories, newest first")
    add_scope(listing)
    listing.add_argument("--all", action="store_true", help="include invalidated memories")
    listing.add_argument("--as-of", help="what was believed at this ISO-8601 time")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(handler=list_memories)
    search = actions.add_parser("search", parents=[common], help="search a user's memories as the gateway does")
    search.add_argument("query")
    add_scope(search, session=False)
    search.add_argument("--limit", type=int)
    search.add_argument("--threshold", type=float)
    search.set_defaults(handler=search_memories)
    for name, handler, help_text in (
        ("show", show_memory, "one memory, invalidated or not"),
        ("history", memory_history, "every version of a memory and every event that touched it"),
        ("delete", delete_memory, "invalidate a memory (kept in history); --hard --yes erases its whole chain"),
    ):
        action = actions.add_parser(name, parents=[common], help=help_text)
        action.add_argument("memory_id")
        action.set_defaults(handler=handler)
    actions.choices["delete"].add_argument("--hard", action="store_true", help="erase instead of invalidating")
    actions.choices["delete"].add_argument("--yes", action="store_true", help="confirm a --hard erasure")
    add_user_commands(commands, common)


def add_user_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    users = commands.add_parser("users", help="export or erase everything Mnemo holds about a user")
    actions = users.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", parents=[common], help="every memory and event of a user")
    export.add_argument("user_id")
    export.add_argument("--output", "-o", help="write the export's JSON to this file")
    export.set_defaults(handler=export_user)
    erase = actions.add_parser("delete", parents=[common], help="erase a user's memories, events and queued jobs")
    erase.add_argument("user_id")
    erase.add_argument("--yes", action="store_true", help="confirm the erasure (it cannot be undone)")
    erase.set_defaults(handler=delete_user)


def add_scope(command: argparse.ArgumentParser, session: bool = True) -> None:
    command.add_argument("--user", required=True, help="the user id")
    command.add_argument("--agent", help="limit to an agent (plus the user's memories without one)")
    if session:
        command.add_argument("--session", help="only memories recorded in this session")


def run(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        with MnemoApi(args.url, args.api_key, args.timeout) as api:
            handler(api, args)
    except ApiError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text())  # noqa: T201


def path_id(value: str) -> str:
    return quote(value, safe="")


def list_memories(api: MnemoApi, args: argparse.Namespace) -> None:
    params = {"user_id": args.user, "agent_id": args.agent, "session_id": args.session, "as_of": args.as_of}
    params |= {"include_invalidated": "true" if args.all else None, "limit": args.limit, "offset": args.offset}
    page = api.get("/v1/memories", params)
    emit(args, page, lambda: render_table(page["data"], MEMORY_COLUMNS, empty=f"no memories for {args.user}"))


def search_memories(api: MnemoApi, args: argparse.Namespace) -> None:
    body = {"query": args.query, "user_id": args.user, "agent_id": args.agent}
    body |= {"limit": args.limit, "threshold": args.threshold}
    found = api.post("/v1/memories/search", {k: v for k, v in body.items() if v is not None})
    emit(args, found, lambda: render_table(found["data"], SCORED_COLUMNS, empty="no memory matches"))


def show_memory(api: MnemoApi, args: argparse.Namespace) -> None:
    memory = api.get(f"/v1/memories/{path_id(args.memory_id)}")
    emit(args, memory, lambda: render_fields(memory, MEMORY_FIELDS))


def memory_history(api: MnemoApi, args: argparse.Namespace) -> None:
    history = api.get(f"/v1/memories/{path_id(args.memory_id)}/history")
    emit(
        args,
        history,
        lambda: "\n\n".join(
            (
                "versions:\n" + render_table(history["versions"], MEMORY_COLUMNS),
                "events:\n" + render_table(history["events"], EVENT_COLUMNS),
            )
        ),
    )


def delete_memory(api: MnemoApi, args: argparse.Namespace) -> None:
    if args.hard and not args.yes:
        raise ApiError(f"--hard erases {args.memory_id} and every version of it for good; add --yes to confirm")
    deleted = api.delete(f"/v1/memories/{path_id(args.memory_id)}", {"hard": "true" if args.hard else None})
    what = f"erased {deleted['deleted']} version(s) of" if args.hard else "invalidated"
    emit(args, deleted, lambda: f"{what} memory {deleted['id']}")


def export_user(api: MnemoApi, args: argparse.Namespace) -> None:
    export = api.get(f"/v1/users/{path_id(args.user_id)}/export")
    summary = f"{args.user_id}: {len(export['memories'])} memories, {len(export['events'])} events"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(export, file, indent=2, ensure_ascii=False)
        emit(
            args,
            {"output": args.output, "memories": len(export["memories"]), "events": len(export["events"])},
            lambda: f"{summary} written to {args.output}",
        )
        return
    emit(args, export, lambda: render_table(export["memories"], MEMORY_COLUMNS) + f"\n\n{summary}")


def delete_user(api: MnemoApi, args: argparse.Namespace) -> None:
    if not args.yes:
        raise ApiError(f"this erases every memory, event and queued exchange of {args.user_id}; add --yes to confirm")
    erased = api.delete(f"/v1/users/{path_id(args.user_id)}")
    emit(
        args,
        erased,
        lambda: (
            f"erased {args.user_id}: {erased['memories']} memories, {erased['events']} events, "
            f"{erased['queued_jobs']} queued jobs, {erased['failed_jobs']} failed-job records"
        ),
    )
