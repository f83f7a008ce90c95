"""`mnemo up` as a user runs it: the real command in a subprocess, with a config file that
points every model at the scripted upstream and nothing else (embedded Redis, Qdrant Edge,
the bundled embedder, raw-mode memory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import yaml

from mnemo.config import Settings
from tests.support.servers import free_port


class MnemoProcess:
    def __init__(self, directory: Path, upstream_url: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "mnemo.yaml"
        config = {
            "data_dir": str(directory / "data"),
            "server": {"port": self.port},
            "models": [{"name": "*", "provider": "openai", "base_url": upstream_url, "api_key": "sk-up"}],
            "worker": {"retry_base_delay_s": 0.1},
        }
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        return Settings.model_validate(yaml.safe_load(self.config.read_text()))

    @property
    def base_url(self) -> str:
        """What an app's OpenAI client is pointed at instead of https://api.openai.com/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> MnemoProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
        command = [sys.executable, "-m", "mnemo_cli.main", "up", "--config", str(self.config)]
        with (self.directory / "mnemo.log").open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"mnemo up did not become ready within 60s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return (self.directory / "mnemo.log").read_text(errors="replace")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(self.log())
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        """Test teardown: end the process if a test left it running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self, user: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url,
            api_key="sk-client",
            default_headers={"X-Mnemo-User-Id": user},
            max_retries=0,
        )
