"""The body budget (gateway.limits) at the ASGI level, its estimate against what parsing really
allocates, the embedder's cut of long texts (which no body budget sees), and the open-files
limit mnemo raises for max_connections."""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gateway.body import read_json_object
from gateway.errors import GatewayError
from gateway.limits import BodyBudget, BodyBudgetMiddleware, bytes_cost, values_cost
from mnemo.embedding import MAX_TEXT_CHARS, LocalOnnxEmbedder
from mnemo_cli import run


def http_scope(body: bytes) -> Scope:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers, "state": {}}


def receiver(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class Exchange:
    """Drives one request through the middleware; the app streams its answer in two parts and
    notes what the budget held while the first part was out."""

    def __init__(self, middleware: BodyBudgetMiddleware, budget: BodyBudget) -> None:
        self.middleware = middleware
        self.budget = budget
        self.sent: list[Message] = []
        self.held_mid_stream: int | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_json_object(Request(scope, receive), 10**6)
        except GatewayError as exc:
            await exc.response()(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        self.held_mid_stream = self.budget.in_flight
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def run(self, body: bytes) -> int:
        async def send(message: Message) -> None:
            self.sent.append(message)

        await self.middleware(http_scope(body), receiver(body), send)
        status: int = self.sent[0]["status"]
        return status

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


def budget_with_app(capacity: int) -> tuple[BodyBudget, BodyBudgetMiddleware, list[Exchange]]:
    budget = BodyBudget(capacity)
    exchanges: list[Exchange] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await exchanges[-1].app(scope, receive, send)

    return budget, BodyBudgetMiddleware(app, budget), exchanges


def charge(body: bytes) -> int:
    return bytes_cost(len(body)) + values_cost(body)


async def test_a_body_is_charged_until_its_stream_has_ended_and_one_that_does_not_fit_gets_429() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}] * 10}).encode()
    budget, middleware, exchanges = budget_with_app(capacity=charge(body) * 3 // 2)

    exchanges.append(first := Exchange(middleware, budget))
    assert await first.run(body) == 200
    assert first.held_mid_stream == charge(body)  # held while the stream was out, not just while parsing
    assert budget.in_flight == 0

    budget.in_flight = charge(body)  # another request of the same size still in flight
    exchanges.append(second := Exchange(middleware, budget))
    assert await second.run(body) == 429
    assert second.headers()[b"retry-after"] == b"1"
    assert json.loads(second.sent[1]["body"])["error"]["code"] == "server_busy"
    assert budget.in_flight == charge(body)  # what the refused request had taken is given back


async def test_a_body_larger_than_the_whole_budget_runs_alone_and_only_alone() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}] * 50}).encode()
    budget, middleware, exchanges = budget_with_app(capacity=charge(body) // 4)

    exchanges.append(alone := Exchange(middleware, budget))
    assert await alone.run(body) == 200
    assert alone.held_mid_stream == budget.capacity

    budget.in_flight = 1
    exchanges.append(crowded := Exchange(middleware, budget))
    assert await crowded.run(body) == 429


@pytest.mark.parametrize(
    "shape",
    [
        {"messages": [{"role": "user", "content": "hi"}] * 20_000},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] * 10_000},
        {"x": [{}] * 50_000},
        {"x": [[]] * 50_000},
        {"x": ["ab"] * 50_000},
        {"x": [1.5] * 50_000},
        {"messages": [{"role": "user", "content": "word " * 20_000}] * 5},
    ],
    ids=["tiny-messages", "content-parts", "empty-objects", "empty-arrays", "short-strings", "floats", "long-text"],
)
def test_the_charge_covers_what_parsing_the_body_allocates(shape: dict[str, Any]) -> None:
    """Parsing is only part of a chat's cost (the forwarded copy and the recorded exchange come on
    top: see gateway.limits), so the charge must at least cover it, whatever the body's shape."""
    raw = json.dumps(shape).encode()
    tracemalloc.start()
    try:
        parsed = json.loads(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del parsed
    assert charge(raw) >= len(raw) + peak


class RecordingTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.longest = 0

    def encode_batch(self, texts: list[str]) -> Any:
        self.longest = max(self.longest, *(len(text) for text in texts))
        return self.tokenizer.encode_batch(texts)


def test_a_long_query_reaches_the_tokenizer_and_the_query_cache_cut_with_the_same_vector() -> None:
    """A 1 MB message was tokenized whole (~120 MB of tokens) before truncation kept 256 of them."""
    embedder = LocalOnnxEmbedder()
    tokenizer = RecordingTokenizer(embedder._tokenizer)
    embedder._tokenizer = tokenizer
    long_text = "my sister lives in Lisbon and " * 40_000

    async def scenario() -> tuple[list[float], list[float]]:
        try:
            whole = await embedder.embed_query(long_text)
            return whole, await embedder.embed_query(long_text[:MAX_TEXT_CHARS] + "and more")
        finally:
            await embedder.close()

    whole, other_tail = asyncio.run(scenario())
    assert tokenizer.longest == MAX_TEXT_CHARS
    assert max(len(key) for key in embedder._cache) == MAX_TEXT_CHARS
    assert whole == other_tail  # the same first 256 word pieces: the same (cached) vector
    assert len(embedder._cache) == 1


def test_the_open_files_limit_is_raised_for_max_connections_as_far_as_the_hard_limit_allows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: limits.update(soft=value[0], hard=value[1]))

    run.raise_open_files_limit(2256)
    assert limits == {"soft": 2256, "hard": 4096}

    with caplog.at_level(logging.WARNING, logger="mnemo"):
        run.raise_open_files_limit(10_000)
    assert limits == {"soft": 4096, "hard": 4096}
    assert "open-files limit 4096 is below the 10000" in caplog.text
