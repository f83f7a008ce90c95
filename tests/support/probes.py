"""Looking at a running Mnemo from a test: openai clients pointed at it, its metrics, what the
store holds for a user, and what the gateway put on the queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

import workers.drain
from mnemo.config import Settings
from mnemo.models import Scope
from mnemo.queue import Exchange, decode_exchange
from mnemo.user_order import user_key
from tests.conftest import REDIS_URL, wait_until
from tests.support.servers import MnemoThread, free_port
from tests.support.upstream import ScriptedUpstream

# Inject every memory of the user, however long retrieval takes: these tests are about where
# memories go, not about ranking, and a loaded CI machine must not make them flaky.
EAGER_MEMORY = {"retrieval_timeout_ms": 5000, "score_threshold": -1.0}
# litellm adds an "ignore" filter for this pydantic warning when it is imported, and imports the
# module that triggers it lazily, on its first call with an api_base. When the import and that
# first call fall in different tests, pytest has dropped litellm's filter in between and the
# warning (an error here) fails the extraction. Modules whose tests extract put this back.
LITELLM_READONLY_WARNING = pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning")

# Every exchange a worker in this process took from a user's list, by request id (the list
# forgets an exchange once applied): what recorded_exchange reads.
SEEN_BY_WORKERS: dict[str, Exchange] = {}


def _decode_and_note(payload: str | dict[str, Any]) -> Exchange:
    exchange = decode_exchange(payload)
    SEEN_BY_WORKERS[exchange.request_id] = exchange
    return exchange


workers.drain.decode_exchange = _decode_and_note  # type: ignore[assignment]  # a spy with its signature


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Gateways:
    """The Mnemos of one test module, started on demand and one at a time.

    litellm's logging worker is process-wide and bound to one event loop; two live Mnemos (two
    loops) would stop each other's worker on shutdown, so a new configuration stops the running
    Mnemo first. A test asking for the configuration that runs gets it back, with the previous
    test's jobs finished and the upstream's record cleared."""

    def __init__(self, data_root: Path, upstream: ScriptedUpstream, upstream_url: str) -> None:
        self.data_root = data_root
        self.upstream = upstream
        self.upstream_url = upstream_url
        self._running: tuple[str | None, MnemoThread] | None = None

    def __enter__(self) -> Gateways:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def get(
        self,
        *,
        fresh: bool = False,
        store: str = "edge",
        store_options: dict[str, Any] | None = None,
        worker: bool = True,
        **sections: Any,
    ) -> MnemoThread:
        """A Mnemo with these settings (as ``make_settings`` takes them; ``store`` is the kind,
        ``store_options`` the rest of that section); ``fresh`` for one the test may break, which
        is never handed out again; ``worker=False`` for one whose jobs stay queued."""
        store_section = {"kind": store, **(store_options or {})}
        key = None if fresh else json.dumps([store_section, worker, sections], sort_keys=True)
        if self._running is None or key is None or self._running[0] != key:
            self.stop()
            self._running = (key, MnemoThread(self.settings(store_section, sections), worker=worker).start())
        mnemo = self._running[1]
        drain(mnemo)
        self.upstream.requests.clear()
        return mnemo

    def settings(self, store: dict[str, Any], sections: dict[str, Any]) -> Settings:
        data_dir = self.data_root / uuid.uuid4().hex[:8]
        raw: dict[str, Any] = {
            "data_dir": str(data_dir / "data"),
            "server": {"port": free_port()},
            "models": [{"name": "*", "provider": "openai", "base_url": self.upstream_url, "api_key": "sk-test"}],
            "store": store if store["kind"] == "edge" else {"path": str(data_dir / "qdrant"), **store},
            "redis": {"url": REDIS_URL, "queue_name": f"mnemo:test:{uuid.uuid4().hex}"},
            "extraction": {"mode": "llm", "model": "openai/scripted", "base_url": self.upstream_url, "api_key": "k"},
            "worker": {"retry_base_delay_s": 0.05},
        }
        for name, value in sections.items():
            raw[name] = {**raw.get(name, {}), **value} if isinstance(value, dict) else value
        return Settings.model_validate(raw)

    def stop(self) -> None:
        if self._running is not None:
            mnemo, self._running = self._running[1], None
            try:
                drain(mnemo)
            finally:
                mnemo.stop()


@contextmanager
def running(settings: Settings) -> Iterator[MnemoThread]:
    """One Mnemo for the block, drained and stopped at its end."""
    mnemo = MnemoThread(settings).start()
    try:
        yield mnemo
        drain(mnemo)
    finally:
        mnemo.stop()


def drain(mnemo: MnemoThread, timeout: float = 15.0) -> None:
    """Wait for the worker to finish what was enqueued: a job cut off by the shutdown would
    leave its coroutines (litellm's among them) to be destroyed with the loop."""
    worker = mnemo.worker
    if worker is None:
        return

    async def idle(_: object) -> bool:
        if worker.pool is None:  # not connected yet
            return False
        # Every user released (a drain holds its user's claim until the list is empty). Not the
        # arq queue: a job cut off by a killed Redis stays there, stale, until its in-progress key lapses.
        claimed = await worker.pool.zcard(mnemo.settings.redis.queue_name + ":claims")
        return claimed == 0 and all(task.done() for task in worker.tasks.values())

    wait_until(lambda: mnemo.call(idle), timeout)


def headers_for(
    user: str | None = None, *, agent: str | None = None, memory: str | None = None, extraction: str | None = None
) -> dict[str, str]:
    values = {
        "X-Mnemo-User-Id": user,
        "X-Mnemo-Agent-Id": agent,
        "X-Mnemo-Memory": memory,
        "X-Mnemo-Extraction": extraction,
    }
    return {name: value for name, value in values.items() if value is not None}


def sync_client(mnemo: MnemoThread, user: str | None = None, api_key: str = "sk-client", **extra: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=mnemo.url + "/v1", api_key=api_key, default_headers=headers_for(user, **extra), max_retries=0
    )


def async_client(
    mnemo: MnemoThread, user: str | None = None, api_key: str = "sk-client", **extra: str
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=mnemo.url + "/v1", api_key=api_key, default_headers=headers_for(user, **extra), max_retries=0
    )


def user_message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def metric(mnemo: MnemoThread, name: str, **labels: str) -> float:
    """A counter's value from GET /metrics (0 when it was never incremented)."""
    text = httpx.get(mnemo.url + "/metrics", timeout=5).text
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    wanted = f"{name}{{{rendered}}}" if rendered else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def stored_texts(mnemo: MnemoThread, user: str, agent: str | None = None) -> list[str]:
    memories = mnemo.call(lambda core: core.store.list(Scope(user_id=user, agent_id=agent)))
    return sorted(m.text for m in memories)


def wait_for_texts(
    mnemo: MnemoThread, user: str, expected: list[str], agent: str | None = None, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while (found := stored_texts(mnemo, user, agent)) != sorted(expected):
        if time.monotonic() > deadline:
            raise AssertionError(f"memories of {user}: {found}, expected {sorted(expected)}")
        time.sleep(0.05)


def extraction_calls(upstream: ScriptedUpstream) -> int:
    return len(upstream.of_task("extract")) + len(upstream.of_task("decide"))


def enqueued(mnemo: MnemoThread) -> float:
    return metric(mnemo, "mnemo_exchanges_enqueued_total")


@dataclass(frozen=True)
class Counts:
    """A Mnemo's exchanges enqueued and chats done with, read before a test's requests."""

    enqueued: float
    lifecycles: float


def counts(mnemo: MnemoThread) -> Counts:
    return Counts(enqueued(mnemo), metric(mnemo, "mnemo_chat_lifecycles_total"))


def wait_until_done_with(mnemo: MnemoThread, before: Counts, requests: int = 1) -> None:
    """Wait until the gateway is done with ``requests`` chats sent since ``before``: each one's
    record step ran or was skipped (mnemo_chat_lifecycles_total, counted after it), so nothing
    more of them can be enqueued. Not a pause: a check made now cannot be made too early."""
    wait_until(lambda: metric(mnemo, "mnemo_chat_lifecycles_total") >= before.lifecycles + requests)


def assert_no_trace(
    mnemo: MnemoThread,
    upstream: ScriptedUpstream,
    redis_client: redis_sync.Redis,
    user: str,
    *,
    before: Counts,
    request_id: str | None = None,
    requests: int = 1,
) -> None:
    """Nothing of the user's ``requests`` chats (sent since ``before``) was enqueued, extracted or
    stored, looked at once the gateway is done with them. Nothing enqueued means nothing for a
    worker to extract or store later either."""
    wait_until_done_with(mnemo, before, requests)
    # The enqueue counter, not the arq queue: a drain of an earlier user may still be finishing there.
    assert enqueued(mnemo) == before.enqueued
    if request_id is not None:
        queue = mnemo.settings.redis.queue_name
        assert redis_client.zscore(user_key(queue, "seen", user), request_id) is None
        assert request_id not in SEEN_BY_WORKERS
    assert extraction_calls(upstream) == 0
    assert stored_texts(mnemo, user) == []


def drained(mnemo: MnemoThread, redis_client: redis_sync.Redis, user: str) -> bool:
    """Nothing of the user's is pending or being applied: every exchange is done with."""
    queue = mnemo.settings.redis.queue_name
    return redis_client.llen(user_key(queue, "pending", user)) == 0 and not redis_client.exists(
        user_key(queue, "claim", user)
    )


def chat_as(api_url: str, user: str, text: str, timeout: float = 20) -> str:
    """One non-streaming chat as ``user`` to the Mnemo whose /v1 base is ``api_url``; it must be
    answered. Returns the request id it was recorded under."""
    response = httpx.post(
        api_url + "/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]},
        headers={"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-client"},
        timeout=timeout,
    )
    assert response.status_code == 200, response.text
    return str(response.headers["x-mnemo-request-id"])


def recorded_exchange(redis_client: redis_sync.Redis, request_id: str, timeout: float = 20.0) -> Exchange:
    """The exchange the gateway enqueued for a request, as a worker of this process took it."""
    return wait_until(lambda: SEEN_BY_WORKERS.get(request_id), timeout)
