"""A gateway answering chats with memories never loads tiktoken (its cl100k encoder is ~28 MB of
a gateway's ~200): each memory's line was counted when it was written (mnemo.memory_line), the
preamble and date lines cost constants (gateway.injection). ``mnemo serve`` runs as a user runs
it, in its own process, and whether tiktoken's native module is loaded is read from outside, from
the process's memory map. A memory stored before counts were is counted by the gateway itself,
which loads tiktoken then: the same look at the map sees it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import yaml

from mnemo.config import Settings
from mnemo.ingest import MemoryWriter
from mnemo.models import Memory, Scope
from mnemo.queue import Exchange, ExchangeMessage
from mnemo.runtime import open_core
from tests.conftest import REDIS_URL
from tests.support.probes import EAGER_MEMORY, new_user
from tests.support.servers import ServerThread, free_port
from tests.support.upstream import ScriptedUpstream

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps")

COUNTED = ["I live in Lisbon with my wife", "My dog is called Rex"]
UNCOUNTED = "I play the cello on Sundays"


def tiktoken_loaded(pid: int) -> bool:
    """tiktoken's encoder is its native module, _tiktoken.*.so: mapped once anything imports tiktoken."""
    return "_tiktoken" in Path(f"/proc/{pid}/maps").read_text()


async def write_memories(settings: Settings, counted_user: str, uncounted_user: str) -> None:
    """``COUNTED`` as the worker writes them (with their line's count); ``UNCOUNTED`` as a memory
    stored before counts were."""
    core = await open_core(settings)
    try:
        now = datetime.now(UTC)
        exchange = Exchange(
            request_id=f"req_{uuid.uuid4().hex}",
            scope=Scope(user_id=counted_user),
            model="gpt-test",
            messages=[ExchangeMessage(role="user", content=text) for text in COUNTED],
            reply="Noted.",
            started_at=now,
            completed_at=now,
        )
        result = await MemoryWriter(core.store, core.embedder, None, "raw").process(exchange)
        assert len(result.created) == len(COUNTED)
        old = Memory(id=str(uuid.uuid4()), text=UNCOUNTED, user_id=uncounted_user, created_at=now, actor="api")
        await core.store.upsert([old], await core.embedder.embed([UNCOUNTED]))
    finally:
        await core.close()


@pytest.fixture
def serve(tmp_path: Path, upstream_server: tuple[ScriptedUpstream, ServerThread]) -> Iterator[dict[str, Any]]:
    """A config for ``mnemo serve`` (the store in qdrant-client's local mode, Redis the tests'),
    and the queue's keys cleaned up afterwards."""
    queue = f"mnemo:test:{uuid.uuid4().hex}"
    config = {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": free_port()},
        "models": [{"name": "*", "provider": "openai", "base_url": upstream_server[1].url + "/v1", "api_key": "k"}],
        "store": {"kind": "qdrant", "path": str(tmp_path / "qdrant")},
        "redis": {"url": REDIS_URL, "queue_name": queue},
        "memory": EAGER_MEMORY,
    }
    yield config
    client = redis_sync.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)
    finally:
        client.close()


def start_serve(config_path: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MNEMO_")}
    command = [sys.executable, "-m", "mnemo_cli.main", "serve", "--config", str(config_path)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=config_path.parent, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(log_path.read_text(errors="replace"))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"mnemo serve was not ready within 90 s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)


def chat(port: int, user: str) -> httpx.Response:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "What do you know about me?"}]},
        headers={"Authorization": "Bearer sk-client", "X-Mnemo-User-Id": user},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_mnemo_serve_answers_chats_with_memories_without_loading_tiktoken(
    tmp_path: Path, serve: dict[str, Any], upstream: ScriptedUpstream
) -> None:
    counted_user, uncounted_user = new_user("counted"), new_user("uncounted")
    asyncio.run(write_memories(Settings.model_validate(serve), counted_user, uncounted_user))
    config_path, port = tmp_path / "mnemo.yaml", serve["server"]["port"]
    config_path.write_text(yaml.safe_dump(serve))
    process = start_serve(config_path, port, tmp_path / "serve.log")
    try:
        assert not tiktoken_loaded(process.pid)  # ready without it

        answered = chat(port, counted_user)
        assert answered.headers["x-mnemo-memories"] == str(len(COUNTED))
        assert all(text in upstream.requests[-1].system_prompt for text in COUNTED)
        assert not tiktoken_loaded(process.pid)

        # Old data keeps working: the gateway counts a memory stored without its count, with tiktoken.
        answered = chat(port, uncounted_user)
        assert answered.headers["x-mnemo-memories"] == "1"
        assert UNCOUNTED in upstream.requests[-1].system_prompt
        assert tiktoken_loaded(process.pid)
    finally:
        process.terminate()
        process.wait(30)
