"""Shared fixtures: the scripted upstream, Redis on 127.0.0.1:6379 (db 15, a queue per test),
and settings pointing Mnemo at both."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  # imported before any server thread starts: CPython 3.11 ast races
import pytest
import redis as redis_sync

from mnemo.config import Settings
from tests.support.servers import ServerThread, free_port
from tests.support.ssl_cache import share_default_ssl_context
from tests.support.upstream import ScriptedUpstream

REDIS_URL = os.environ.get("MNEMO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
share_default_ssl_context()  # and each HTTP client it or a test makes skips reloading the CA bundle


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[tuple[ScriptedUpstream, ServerThread]]:
    upstream = ScriptedUpstream()
    server = ServerThread(upstream.app()).start()
    yield upstream, server
    server.stop()


@pytest.fixture
def upstream(upstream_server: tuple[ScriptedUpstream, ServerThread]) -> Iterator[ScriptedUpstream]:
    scripted, _ = upstream_server
    scripted.reset()
    yield scripted
    scripted.reset()


@pytest.fixture
def upstream_url(upstream_server: tuple[ScriptedUpstream, ServerThread]) -> str:
    return upstream_server[1].url + "/v1"


@pytest.fixture
def redis_client() -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def make_settings(tmp_path: Path, upstream_url: str) -> Callable[..., Settings]:
    """Settings for one test: its own data dir, queue name and port; extraction through the
    scripted upstream unless ``extraction`` says otherwise."""

    def make(store: str = "edge", extraction: str = "llm", **sections: Any) -> Settings:
        raw: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "server": {"port": free_port()},
            "models": [{"name": "*", "provider": "openai", "base_url": upstream_url, "api_key": "sk-test"}],
            "store": {"kind": store} if store == "edge" else {"kind": "qdrant", "path": str(tmp_path / "qdrant")},
            "redis": {"url": REDIS_URL, "queue_name": f"mnemo:test:{uuid.uuid4().hex}"},
            "extraction": {"mode": extraction, "model": "openai/scripted", "base_url": upstream_url, "api_key": "k"},
            "worker": {"retry_base_delay_s": 0.05},
        }
        if extraction == "raw":
            raw["extraction"] = {"mode": "raw"}
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        return Settings.model_validate(raw)

    return make


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Load and soak tests (``@pytest.mark.slow``) run only with MNEMO_SLOW=1."""
    if os.environ.get("MNEMO_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set MNEMO_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
