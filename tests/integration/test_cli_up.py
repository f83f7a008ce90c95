"""`mnemo up` as a user runs it: one process, embedded Redis, Qdrant Edge, the bundled embedder.
Driven by the real openai SDK; the only stand-in is the scripted upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from mnemo.config import Settings
from mnemo.embedded_redis import EmbeddedRedis
from mnemo.models import Scope, utcnow
from mnemo.queue import Exchange, ExchangeMessage, ExchangeQueue, redis_settings
from tests.conftest import wait_until
from tests.support.servers import free_port
from tests.support.upstream import ScriptedUpstream


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

    def start(self) -> MnemoProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
        command = [sys.executable, "-m", "mnemo_cli.main", "up", "--config", str(self.config)]
        with (self.directory / "mnemo.log").open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, env=env, stdout=log, stderr=log)
        wait_until(self.ready, timeout=60, interval=0.1)
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.directory / "mnemo.log").read_text())
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def client(self, user: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            api_key="sk-client",
            default_headers={"X-Mnemo-User-Id": user},
            max_retries=0,
        )


@pytest.fixture
def mnemo_process(tmp_path: Path, upstream_url: str) -> Iterator[MnemoProcess]:
    process = MnemoProcess(tmp_path, upstream_url)
    yield process
    if process.process is not None and process.process.poll() is None:
        process.process.kill()
        process.process.wait(10)


def injected(client: openai.OpenAI, upstream: ScriptedUpstream, question: str) -> str:
    client.chat.completions.create(model="any-model", messages=[{"role": "user", "content": question}])
    return upstream.of_task("chat")[-1].system_prompt


def test_mnemo_up_remembers_across_sessions_and_restarts_with_nothing_but_a_config_file(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    carol = mnemo_process.start().client("carol")
    carol.chat.completions.create(model="any-model", messages=[{"role": "user", "content": "I keep bees on my roof"}])
    wait_until(lambda: "bees" in injected(carol, upstream, "What do you know about my bees?"))
    assert "bees" not in injected(mnemo_process.client("dave"), upstream, "What do you know about my bees?")
    assert mnemo_process.stop() == 0

    mnemo_process.start()
    assert "bees" in injected(carol, upstream, "What do you know about my bees?")
    assert mnemo_process.stop() == 0


def test_an_exchange_queued_before_a_restart_is_processed_after_it(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    settings = mnemo_process.settings

    async def enqueue_while_mnemo_is_down() -> None:
        redis = EmbeddedRedis(settings.data_path)
        await redis.start()
        queue = await ExchangeQueue.connect(
            redis_settings(settings, str(redis.socket_path)), settings.redis.queue_name
        )
        now = utcnow()
        await queue.enqueue(
            Exchange(
                request_id="req_before_restart",
                scope=Scope(user_id="erin"),
                model="any-model",
                messages=[ExchangeMessage(role="user", content="My cat is called Miso")],
                reply="Nice!",
                started_at=now,
                completed_at=now,
            )
        )
        await queue.close()
        await redis.stop()

    asyncio.run(enqueue_while_mnemo_is_down())
    erin = mnemo_process.start().client("erin")
    wait_until(lambda: "Miso" in injected(erin, upstream, "What is my cat called?"))
