"""``mnemo worker`` for the production-shape target, on a Qdrant Edge store of its own.

    python -m bench.overhead.edge_worker --config worker.yaml

The same code ``mnemo worker`` runs (``workers.settings.build_worker`` on the configured event loop,
its own embedder and store, the external Redis of ``redis.url``), without the command's refusal of
the embedded store. The command refuses it because a worker writing to an Edge directory that no
gateway can open is useless in production; here that is the point: a Qdrant server is not available
on this machine and neither local store can be shared by two processes (Qdrant Edge and
qdrant-client's local mode both lock their directory), so the bench's gateway searches its own Edge
store and this worker writes to another one. The worker then pays for the real engine's in-process
writes where production would pay for an HTTP upsert to Qdrant (bench/README.md says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnemo.config import Settings, load_settings
from mnemo.logs import configure_logging
from mnemo.queue import redis_settings
from mnemo_cli.run import run_on_loop
from workers.settings import build_worker


async def work(settings: Settings) -> None:
    worker = build_worker(settings, redis_settings(settings))
    try:
        await worker.async_run()
    finally:
        await worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="mnemo worker on its own Qdrant Edge store (bench only).")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    configure_logging(args.log_level)
    settings = load_settings(args.config)
    if not settings.redis.url:
        raise SystemExit("edge_worker: the config needs redis.url (the Redis the gateway enqueues on)")
    run_on_loop(work(settings), settings.event_loop)


if __name__ == "__main__":
    main()
