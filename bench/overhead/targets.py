"""The processes under test, each on 127.0.0.1 with its own port: the scripted upstream, a real
``mnemo up``, and the LiteLLM proxy (from its own virtualenv). Each exposes its pid so the bench
can read the CPU time and RSS of the process and its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def upstream(workdir: Path, chunks: int, first_chunk_ms: float, chunk_ms: float) -> Service:
    port = free_port()
    command = [sys.executable, "-m", "bench.overhead.upstream", "--port", str(port), "--chunks", str(chunks)]
    command += ["--first-chunk-ms", str(first_chunk_ms), "--chunk-ms", str(chunk_ms)]
    return Service("upstream", command, port, "/v1/models", workdir / "upstream.log")


# The overhead benches' one user writes 1,000 memories at start and one per mnemo-on chat (~150/s):
# the per-user write quota would refuse the seeding and skip most stores, measuring less work.
NO_WRITE_QUOTA = {"limits": {"memories_per_user_per_minute": 0}}


def mnemo(workdir: Path, upstream_url: str, redis_url: str | None, extra: dict[str, Any] | None = None) -> Service:
    """``extra``: more top-level sections of the config (e.g. NO_WRITE_QUOTA)."""
    port = free_port()
    config = {
        "data_dir": str(workdir / "mnemo-data"),
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
    path = workdir / "mnemo.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "mnemo_cli.main", "--log-level", "WARNING", "up", "--config", str(path)]
    return Service("mnemo", command, port, "/readyz", workdir / "mnemo.log")


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
