"""X-Mnemo-Memory-Status on Chat Completions, the Responses API and Anthropic's Messages API:
``ok`` when memory was searched (found or not), ``off`` when it was not asked for, and
``skipped:<reason>`` when it was asked for but unavailable, counted in /metrics by API and status.
A client can tell "no memories" from "memory unavailable"."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from mnemo.embedding import LocalOnnxEmbedder
from mnemo.errors import EmbedderError, EmbedderOverloaded, StoreError
from tests.support.probes import Gateways, headers_for, metric, new_user
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

# A healthy search meets the first budget however loaded the machine; a hung one waits out the
# second (only hung searches meet it).
RETRIEVAL_BUDGET_MS = 5000
HUNG_RETRIEVAL_BUDGET_MS = 300
APIS = ["chat", "responses", "messages"]


def with_budget(gateways: Gateways, retrieval_timeout_ms: int) -> MnemoThread:
    root = gateways.upstream_url.removesuffix("/v1")
    models = [
        {"name": "claude-test", "provider": "anthropic", "base_url": root, "api_key": "sk-ant-operator"},
        {"name": "*", "provider": "openai", "base_url": gateways.upstream_url, "api_key": "sk-test"},
    ]
    memory = {"retrieval_timeout_ms": retrieval_timeout_ms, "score_threshold": -1.0}
    return gateways.get(memory=memory, extraction={"mode": "raw"}, models=models)


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream) -> MnemoThread:
    return with_budget(gateways, RETRIEVAL_BUDGET_MS)


def request(api: str, text: str, stream: bool = False) -> tuple[str, dict[str, Any]]:
    if api == "chat":
        return "/v1/chat/completions", {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}
    if api == "responses":
        return "/v1/responses", {"model": "gpt-test", "input": text, "stream": stream}
    return "/v1/messages", {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def call(
    mnemo: MnemoThread, api: str, user: str | None, stream: bool = False, memory: str | None = None
) -> httpx.Response:
    path, body = request(api, "Where do I live?")
    body["stream"] = stream
    with httpx.stream(
        "POST", mnemo.url + path, json=body, headers=headers_for(user, memory=memory), timeout=10
    ) as response:
        text = response.read().decode()
    assert response.status_code == 200, text
    assert stream or "Echo: Where do I live?" in text  # answered, whatever memory did
    return response


def status(response: httpx.Response) -> str:
    return response.headers["x-mnemo-memory-status"]


@pytest.mark.parametrize("api", APIS)
def test_memory_searched_is_ok_even_with_no_memories_and_memory_not_asked_for_is_off(
    mnemo: MnemoThread, upstream: ScriptedUpstream, api: str
) -> None:
    user = new_user("wes")
    before = metric(mnemo, "mnemo_memory_status_total", api=api, status="ok")
    for stream in (False, True):  # read mode: nothing is recorded, so the user still has no memories
        found = call(mnemo, api, user, stream=stream, memory="read")
        assert (status(found), found.headers["x-mnemo-memories"]) == ("ok", "0")
    assert metric(mnemo, "mnemo_memory_status_total", api=api, status="ok") == before + 2

    off_before = metric(mnemo, "mnemo_memory_status_total", api=api, status="off")
    assert status(call(mnemo, api, None)) == "off"  # no user id: proxied with memory off
    assert status(call(mnemo, api, user, memory="off")) == "off"
    assert status(call(mnemo, api, user, memory="write")) == "off"
    assert metric(mnemo, "mnemo_memory_status_total", api=api, status="off") == off_before + 3


async def hang(*args: Any, **kwargs: Any) -> Any:
    await asyncio.sleep(3600)


def fail_with(error: Exception) -> Any:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    return broken


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("dependency", "method", "replacement", "expected"),
    [
        ("store", "search", fail_with(StoreError("scripted: store down")), "skipped:store_error"),
        ("embedder", "embed_query", fail_with(EmbedderError("scripted: embedder down")), "skipped:embedder_error"),
        ("embedder", "embed_query", hang, "skipped:timeout"),
        ("embedder", "embed_query", fail_with(EmbedderOverloaded("scripted: queue full")), "skipped:overloaded"),
    ],
)
def test_memory_that_is_unavailable_is_skipped_with_its_reason_and_the_reply_still_arrives(
    gateways: Gateways,
    upstream: ScriptedUpstream,
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    dependency: str,
    method: str,
    replacement: Any,
    expected: str,
) -> None:
    mnemo = with_budget(gateways, HUNG_RETRIEVAL_BUDGET_MS if replacement is hang else RETRIEVAL_BUDGET_MS)
    before = metric(mnemo, "mnemo_memory_status_total", api=api, status=expected)
    monkeypatch.setattr(getattr(mnemo.core, dependency), method, replacement)
    skipped = call(mnemo, api, new_user("xan"), stream=api == "responses")
    assert (status(skipped), skipped.headers["x-mnemo-memories"]) == (expected, "0")
    assert metric(mnemo, "mnemo_memory_status_total", api=api, status=expected) == before + 1


def test_a_stuck_query_embedder_is_skipped_as_a_timeout_and_answers_again_once_it_moves(
    gateways: Gateways, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real query lane, its forward pass held: it shows no progress, unlike one busy with
    # other chats' queries, so the chat waits the stall budget (not the ceiling) and says why.
    mnemo = with_budget(gateways, HUNG_RETRIEVAL_BUDGET_MS)
    assert isinstance(mnemo.core.embedder, LocalOnnxEmbedder)
    lane = mnemo.core.embedder._queries
    held = threading.Event()
    encode = lane._encode

    def stuck(texts: Any) -> Any:
        held.wait(timeout=60)
        return encode(texts)

    monkeypatch.setattr(lane, "_encode", stuck)
    user = new_user("yara")
    timeouts = metric(mnemo, "mnemo_retrieval_fail_open_total", reason="timeout")
    try:
        skipped = call(mnemo, "chat", user, memory="read")
    finally:
        held.set()  # the pass runs on, and the lane with it
    assert (status(skipped), skipped.headers["x-mnemo-memories"]) == ("skipped:timeout", "0")
    assert metric(mnemo, "mnemo_retrieval_fail_open_total", reason="timeout") == timeouts + 1
    assert status(call(mnemo, "chat", user, memory="read")) == "ok"
