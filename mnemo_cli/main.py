"""``mnemo up | serve | worker | config check``, and the operator commands (``memories``, ``users``,
``import``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mnemo.config import Settings, load_settings
from mnemo.errors import MnemoError
from mnemo.logs import LOG_FORMATS, configure_logging
from mnemo.malloc_tuning import limit_arenas
from mnemo_cli import admin, importer

logger = logging.getLogger("mnemo")

DEFAULT_CONFIG_NAMES = ("mnemo.yaml", "config.yaml")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mnemo", description="Long-term memory gateway for LLM apps.")
    root.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    root.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("MNEMO_LOG_FORMAT") or "text",
        help="text, or json (one object per line, with request_id) (MNEMO_LOG_FORMAT; default text)",
    )
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "gateway and worker in one process (the embedded default)"),
        ("serve", "the gateway only (server mode: Qdrant server + Redis)"),
        ("worker", "the worker only (server mode)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", "-c", help="YAML config file (default: none, built-in defaults)")
        if name != "worker":
            command.add_argument("--host", help="bind address (overrides server.host)")
            command.add_argument("--port", type=int, help="port (overrides server.port)")
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file and say what is wrong")
    check.add_argument("path")
    admin.add_commands(commands)
    importer.add_command(commands, admin.client_options())
    return root


def settings_from(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {key: getattr(args, key, None) for key in ("host", "port")}
    server = settings.server.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return settings.model_copy(update={"server": server})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.log_format not in LOG_FORMATS:
        print(f"mnemo: MNEMO_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command in ("memories", "users"):
        return admin.run(args)
    if args.command == "import":
        return importer.run(args)
    try:
        if args.command == "config":
            return check_config(Path(args.path))
        configure_logging(args.log_level, args.log_format)
        settings = settings_from(args)
        limit_arenas()  # before the server's threads start
        from mnemo_cli import run

        runner = {"up": run.run_up, "serve": run.run_serve, "worker": run.run_worker}[args.command]
        run.run_on_loop(runner(settings), settings.event_loop)
    except MnemoError as exc:
        print(f"mnemo: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def check_config(path: Path) -> int:
    settings = load_settings(path)
    print(f"{path}: OK (store={settings.store.kind}, models={len(settings.models)})")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
