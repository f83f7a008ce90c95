"""The store or the embedder down or slow: chats are answered without memory inside the
retrieval budget (counted in /metrics), /readyz names the degraded dependency, and the
worker retries the exchange with backoff until the dependency is back, dropping nothing.
(A closed, raising or slow *store search* is covered by test_gateway_memory.py.)"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from mnemo.errors import EmbedderError, StoreError
from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.ledger import Tally, thread_tally
from tests.support.probes import Gateways, drain, metric
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

FAILED_TRIES = 3  # the outage lasts until the worker has tried (and backed off) this many times


def with_budget(gateways: Gateways, retrieval_timeout_ms: int) -> MnemoThread:
    memory = {"retrieval_timeout_ms": retrieval_timeout_ms, "score_threshold": -1.0}
    return gateways.get(extraction={"mode": "raw"}, memory=memory, worker={"max_tries": 10})


@pytest.fixture
def mnemo(gateways: Gateways) -> MnemoThread:
    """A retrieval budget that a healthy search meets however loaded the machine (the tests
    restore what they break, so the module's tests share it, each with its own user)."""
    return with_budget(gateways, 5000)


@pytest.fixture
def tight(gateways: Gateways) -> MnemoThread:
    """A 300 ms retrieval budget, for chats that wait it out (no test needs a healthy search
    to meet it: the seed's chat is only asserted to be answered)."""
    return with_budget(gateways, 300)


class Outage:
    """Replaces methods of the store or embedder with failing (or hanging) ones, counting calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, int] = {}

    def fail(self, target: object, name: str, error: Exception) -> None:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            raise error

        self.monkeypatch.setattr(target, name, broken)

    def hang(self, target: object, name: str) -> None:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            await asyncio.sleep(3600)

        self.monkeypatch.setattr(target, name, slow)

    def end(self) -> None:
        self.monkeypatch.undo()


def chat(mnemo: MnemoThread, user: str, text: str, memory: str = "on") -> httpx.Response:
    response = httpx.post(
        mnemo.url + "/v1/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]},
        headers={"X-Mnemo-User-Id": user, "X-Mnemo-Memory": memory, "Authorization": "Bearer sk-client"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Echo: {text}"
    return response


def seed(mnemo: MnemoThread, user: str, text: str) -> None:
    chat(mnemo, user, text)
    wait_until(lambda: [m.text for m in mnemo.call(lambda core: core.store.list(Scope(user_id=user)))] == [text])


def readiness(mnemo: MnemoThread) -> tuple[int, dict[str, str]]:
    response = httpx.get(mnemo.url + "/readyz", timeout=10)
    return response.status_code, response.json()["checks"]


@pytest.mark.parametrize("dependency", ["store", "embedder"])
def test_a_dependency_that_is_down_fails_chats_open_and_the_worker_retries_until_it_is_back(
    mnemo: MnemoThread, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch, dependency: str
) -> None:
    user = f"down-{dependency}-{uuid.uuid4().hex[:8]}"
    seed(mnemo, user, "I live in Austin")
    outage = Outage(monkeypatch)
    if dependency == "store":
        for name in ("search", "find_texts", "upsert", "ping", "list"):
            outage.fail(mnemo.core.store, name, StoreError("scripted: store down"))
    else:
        for name in ("embed", "embed_query", "probe"):  # every way in to the model
            outage.fail(mnemo.core.embedder, name, EmbedderError("scripted: embedder down"))

    reason = "StoreError" if dependency == "store" else "EmbedderError"
    failed_open = metric(mnemo, "mnemo_retrieval_fail_open_total", reason=reason)
    retries = metric(mnemo, "mnemo_worker_jobs_total", outcome="retry")
    answered = chat(mnemo, user, "I moved to Denver")
    assert answered.headers["x-mnemo-memories"] == "0"
    assert metric(mnemo, "mnemo_retrieval_fail_open_total", reason=reason) == failed_open + 1
    status, checks = readiness(mnemo)
    assert status == 503 and checks[dependency].startswith("unavailable") and checks["queue"] == "ok"
    # Each try of the job (raw mode) looks for a verbatim twin (store), then embeds. The chat
    # embedded its query with embed_query, and the readiness probe used embed.
    failing, before_job = ("find_texts", 0) if dependency == "store" else ("embed", 1)
    wait_until(lambda: outage.calls.get(failing, 0) >= before_job + FAILED_TRIES, timeout=20)

    outage.end()
    request_id = answered.headers["x-mnemo-request-id"]
    sent = {request_id: user}
    wait_until(lambda: thread_tally(mnemo, sent).stored == 1, timeout=30)
    drain(mnemo)
    assert thread_tally(mnemo, sent) == Tally(sent=1, stored=1, duplicated=0, lost=0)
    assert metric(mnemo, "mnemo_worker_jobs_total", outcome="retry") >= retries + FAILED_TRIES
    assert readiness(mnemo) == (200, {"store": "ok", "embedder": "ok", "queue": "ok"})
    assert chat(mnemo, user, "Where do I live?").headers["x-mnemo-memories"] == "2"


@pytest.mark.parametrize("dependency", ["store", "embedder"])
def test_a_hung_dependency_costs_a_chat_only_the_retrieval_budget(
    tight: MnemoThread, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch, dependency: str
) -> None:
    mnemo, user = tight, f"hung-{dependency}-{uuid.uuid4().hex[:8]}"
    seed(mnemo, user, "I live in Austin")
    timeouts = metric(mnemo, "mnemo_retrieval_fail_open_total", reason="timeout")
    outage = Outage(monkeypatch)
    if dependency == "store":
        outage.hang(mnemo.core.store, "search")
    else:
        outage.hang(mnemo.core.embedder, "embed")
        outage.hang(mnemo.core.embedder, "embed_query")
        outage.hang(mnemo.core.embedder, "probe")
    # memory=read: nothing is recorded, so no job meets the hung dependency after the chats.
    answers = [chat(mnemo, user, f"Question {n} about where I live?", memory="read") for n in range(3)]
    assert [a.headers["x-mnemo-memories"] for a in answers] == ["0", "0", "0"]
    assert metric(mnemo, "mnemo_retrieval_fail_open_total", reason="timeout") == timeouts + 3
    status, checks = readiness(mnemo)
    if dependency == "embedder":
        assert status == 503 and checks["embedder"].startswith("unavailable: TimeoutError")
    outage.end()
    drain(mnemo)
