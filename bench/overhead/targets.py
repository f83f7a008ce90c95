"""The processes under test, each on 127.0.0.1 with its own port: the scripted upstream, a real
``mnemo up``, the production shape (``mnemo serve``, a worker in its own process and a
redis-server of the bench's own), and the LiteLLM proxy (from its own virtualenv). Each exposes its
pid so the bench can read the CPU time and RSS of the process and its children; a target served by
several processes (a ``Deployment``) is read process by process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import yaml

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bench-model"
ANTHROPIC_MODEL = "bench-claude"  # a provider: anthropic route (Messages API) to the same upstream
MASTER_KEY = "sk-bench-master"
LITELLM_QUIET = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "LITELLM_LOG": "ERROR",
}


@dataclass
class Service:
    name: str
    command: list[str]
    port: int
    ready_path: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    probe: Callable[[], bool] | None = None  # readiness, for a process with no HTTP port (else ready_path)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")} | self.env
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        if self.probe is not None:
            return self.probe()
        try:
            return httpx.get(self.url + self.ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def usage(self) -> tuple[float, float]:
        """CPU seconds (user + system) and RSS bytes of the process and all its children."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        cpu, rss = 0.0, 0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return cpu, float(rss)

    def deployment(self) -> Deployment:
        return Deployment(self.url, {self.name: self})

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass(frozen=True)
class Deployment:
    """The processes that serve one target, by role (``gateway``, ``worker``, ``redis``), and the URL
    its requests and ``/metrics`` go to. A single process is a deployment of one."""

    url: str
    processes: dict[str, Service]

    def usage(self) -> dict[str, tuple[float, float]]:
        """CPU seconds and RSS bytes of each role (each with its children)."""
        return {role: service.usage() for role, service in self.processes.items()}

    def start(self) -> Deployment:
        """In order; on a failure the ones already started are stopped."""
        try:
            for service in self.processes.values():
                service.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for service in reversed(self.processes.values()):
            service.stop()


def upstream(workdir: Path, chunks: int, first_chunk_ms: float, chunk_ms: float) -> Service:
    port = free_port()
    command = [sys.executable, "-m", "bench.overhead.upstream", "--port", str(port), "--chunks", str(chunks)]
    command += ["--first-chunk-ms", str(first_chunk_ms), "--chunk-ms", str(chunk_ms)]
    return Service("upstream", command, port, "/v1/models", workdir / "upstream.log")


# The overhead benches' one user writes 1,000 memories at start and one per mnemo-on chat (~150/s):
# the per-user write quota would refuse the seeding and skip most stores, measuring less work.
NO_WRITE_QUOTA = {"limits": {"memories_per_user_per_minute": 0}}


def mnemo_config(
    data_dir: Path, port: int, upstream_url: str, redis_url: str | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """``extra``: more top-level sections of the config (e.g. NO_WRITE_QUOTA)."""
    return {
        "data_dir": str(data_dir),
        "server": {"port": port},
        "models": [
            {"name": "*", "provider": "openai", "base_url": upstream_url + "/v1", "api_key": "sk-up"},
            # Anthropic's base URL is the host root: /v1/messages is appended, as LiteLLM does.
            {"name": ANTHROPIC_MODEL, "provider": "anthropic", "base_url": upstream_url, "api_key": "sk-up"},
        ],
        "embedder": {"threads": 1},
        "redis": {"url": redis_url},
        **(extra or {}),
    }


def mnemo(workdir: Path, upstream_url: str, redis_url: str | None, extra: dict[str, Any] | None = None) -> Service:
    """``mnemo up``: gateway and worker in one process, the embedded Redis unless ``redis_url``."""
    port = free_port()
    path = workdir / "mnemo.yaml"
    path.write_text(yaml.safe_dump(mnemo_config(workdir / "mnemo-data", port, upstream_url, redis_url, extra)))
    command = [sys.executable, "-m", "mnemo_cli.main", "--log-level", "WARNING", "up", "--config", str(path)]
    return Service("mnemo", command, port, "/readyz", workdir / "mnemo.log")


def redis_server(workdir: Path) -> Service:
    """A redis-server of the bench's own on a free port (never the shared 6379), nothing persisted."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(workdir)]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return Service("redis", command, port, "", workdir / "redis.log", probe=answers)


def serve_shape(workdir: Path, upstream_url: str, extra: dict[str, Any] | None = None) -> Deployment:
    """The production shape: a redis-server of its own, ``mnemo serve`` (the gateway alone) and a
    worker in its own process on that Redis, started in that order by ``Deployment.start``.

    A Qdrant server is not available here and neither local store can be shared by two processes,
    so the gateway searches a Qdrant Edge store of its own (``mnemo serve`` warns, and runs) and the
    worker (``bench.overhead.edge_worker``) writes to another one: the gateway's user keeps the
    memories seeded into it while the worker's stores grow."""
    queue_server = redis_server(workdir)
    redis_url = f"redis://127.0.0.1:{queue_server.port}/0"
    port = free_port()
    config = mnemo_config(workdir / "serve-gateway-data", port, upstream_url, redis_url, extra)
    gateway_path = workdir / "serve-gateway.yaml"
    gateway_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "mnemo_cli.main", "--log-level", "WARNING", "serve", "--config"]
    gateway = Service("gateway", [*command, str(gateway_path)], port, "/readyz", workdir / "serve-gateway.log")

    worker_config = config | {"data_dir": str(workdir / "serve-worker-data")}
    worker_path = workdir / "serve-worker.yaml"
    worker_path.write_text(yaml.safe_dump(worker_config))
    queue = redis.Redis.from_url(redis_url, socket_timeout=2)
    health_key = "mnemo:queue:health-check"  # arq's key for the default redis.queue_name

    def worker_polls() -> bool:
        """arq records its health key on its first poll, after start-up opened the embedder and store."""
        try:
            return bool(queue.exists(health_key))
        except redis.RedisError:
            return False

    worker_command = [sys.executable, "-m", "bench.overhead.edge_worker", "--config", str(worker_path)]
    worker = Service("worker", worker_command, 0, "", workdir / "serve-worker.log", probe=worker_polls)
    return Deployment(gateway.url, {"redis": queue_server, "gateway": gateway, "worker": worker})


def litellm(workdir: Path, python: Path, upstream_url: str) -> Service:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream_url + "/v1", "api_key": "sk-up"},
            },
            {
                "model_name": ANTHROPIC_MODEL,
                "litellm_params": {
                    "model": f"anthropic/{ANTHROPIC_MODEL}",
                    "api_base": upstream_url,
                    "api_key": "sk-up",
                },
            },
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(python.parent / "litellm"), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    return Service("litellm", command, port, "/health/liveliness", workdir / "litellm.log", env=LITELLM_QUIET)
