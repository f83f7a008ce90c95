"""Upstream failures the gateway-level tests (test_gateway_errors.py, test_gateway_streaming.py)
do not cover: an upstream that resets the connection, and what is left in the gateway's
connection pool after clients walk away from streams (each fails cleanly and records nothing);
and an upstream that closes a kept-alive connection between two chats (the next chat succeeds)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.probes import Gateways, counts, drain, metric, wait_until_done_with
from tests.support.servers import MnemoThread, free_port
from tests.support.upstream import ScriptedUpstream

ERROR_KEYS = {"message", "type", "param", "code"}


class ResettingUpstream:
    """Accepts a connection, reads the request, then resets it (RST, no HTTP answer) — or,
    with ``after_headers``, sends a streaming response's head and one event first."""

    def __init__(self, after_headers: bool = False) -> None:
        self.port = free_port()
        self.after_headers = after_headers
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.recv(65536)
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        if self.after_headers:
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                b'2c\r\ndata: {"choices":[{"index":0,"delta":{}}]}\n\n\r\n'
            )
            # Let the gateway read the head first: a reset that overtakes it on the wire
            # would discard the unread head, making this a reset before any answer.
            time.sleep(0.3)
        # SO_LINGER 0: close() sends RST instead of FIN.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


class ClosingUpstream(ResettingUpstream):
    """Answers one request per connection, keep-alive as far as the headers say, then closes the
    connection (FIN): a server whose keep-alive timeout lapsed between two requests."""

    def _answer(self, connection: socket.socket) -> None:
        body = json.dumps({"id": "c1", "object": "chat.completion", "choices": [CLOSING_CHOICE]}).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)  # then the connection closes: a FIN


CLOSING_CHOICE = {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}


@pytest.fixture(scope="module")
def resetting() -> Iterator[dict[str, ResettingUpstream]]:
    upstreams = {
        "reset": ResettingUpstream(),
        "reset-mid": ResettingUpstream(after_headers=True),
        "closing": ClosingUpstream(),
    }
    yield upstreams
    for upstream in upstreams.values():
        upstream.close()


def models(gateways: Gateways, resetting: dict[str, ResettingUpstream]) -> list[dict[str, str]]:
    routes = [
        {"name": name, "provider": "openai", "base_url": f"http://127.0.0.1:{up.port}/v1", "api_key": "sk"}
        for name, up in resetting.items()
    ]
    return [*routes, {"name": "*", "provider": "openai", "base_url": gateways.upstream_url, "api_key": "sk-test"}]


@pytest.fixture
def mnemo(gateways: Gateways, resetting: dict[str, ResettingUpstream]) -> MnemoThread:
    """Shared by the tests that do not look into the gateway's connection pool."""
    return gateways.get(extraction={"mode": "raw"}, models=models(gateways, resetting))


@pytest.fixture
def pooled(gateways: Gateways, resetting: dict[str, ResettingUpstream]) -> MnemoThread:
    """A Mnemo of the test's own: what its connection pool holds is what the test did."""
    return gateways.get(fresh=True, extraction={"mode": "raw"}, models=models(gateways, resetting))


def services_of(mnemo: MnemoThread) -> Any:
    """The gateway's Services, from the lifespan state uvicorn keeps (test-only introspection)."""
    return mnemo.gateway.server.lifespan.state["services"]


def pool_connections(mnemo: MnemoThread) -> list[Any]:
    return list(services_of(mnemo).http._transport._pool.connections)


def post(mnemo: MnemoThread, user: str, model: str, stream: bool) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "I live in Lisbon"}], "stream": stream}
    headers = {"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-client"}
    return httpx.post(mnemo.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def stored(mnemo: MnemoThread, user: str) -> int:
    return len(mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True)))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_upstream_that_resets_the_connection_is_a_502_and_nothing_is_recorded(
    mnemo: MnemoThread, resetting: dict[str, ResettingUpstream], stream: bool
) -> None:
    user = f"reset-{uuid.uuid4().hex[:8]}"
    errors, connections = metric(mnemo, "mnemo_chat_errors_total", status="502"), resetting["reset"].connections
    response = post(mnemo, user, "reset", stream)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and error["message"]
    assert resetting["reset"].connections >= connections + 1
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 0
    assert metric(mnemo, "mnemo_chat_errors_total", status="502") == errors + 1
    drain(mnemo)
    assert stored(mnemo, user) == 0


def test_a_stream_reset_after_its_first_event_ends_with_an_error_event_and_records_nothing(
    mnemo: MnemoThread, resetting: dict[str, ResettingUpstream]
) -> None:
    user = f"reset-mid-{uuid.uuid4().hex[:8]}"
    response = post(mnemo, user, "reset-mid", stream=True)
    assert response.status_code == 200  # the head was already relayed
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1].startswith('data: {"error"'), events
    assert "[DONE]" not in response.text
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 0
    drain(mnemo)
    assert stored(mnemo, user) == 0


def test_a_kept_alive_connection_the_upstream_closed_is_dropped_before_the_next_chat_uses_it(
    pooled: MnemoThread, resetting: dict[str, ResettingUpstream]
) -> None:
    # httpcore asks each idle connection whether it is readable before reusing it (the gateway's
    # streams answer that themselves: gateway/upstream_transport.py); a closed one is.
    mnemo, user, connections = pooled, f"closing-{uuid.uuid4().hex[:8]}", resetting["closing"].connections
    assert post(mnemo, user, "closing", stream=False).status_code == 200
    wait_until(lambda: all(c.is_idle() for c in pool_connections(mnemo)), timeout=5)
    time.sleep(0.2)  # the upstream's FIN reaches the gateway's socket
    second = post(mnemo, user, "closing", stream=False)
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "ok"
    assert resetting["closing"].connections == connections + 2


async def leave_streams(mnemo: MnemoThread, user: str, clients: int) -> None:
    """``clients`` streaming clients each read one event, then drop the connection."""

    async def one(index: int) -> None:
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": f"I own boat {index}"}], "stream": True}
        headers = {"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-client"}
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", mnemo.url + "/v1/chat/completions", json=body, headers=headers) as reply:
                async for line in reply.aiter_lines():
                    if line.startswith("data: {"):
                        break

    await asyncio.gather(*(one(i) for i in range(clients)))


def test_clients_that_leave_mid_stream_leave_no_upstream_connection_behind(
    pooled: MnemoThread, upstream: ScriptedUpstream
) -> None:
    upstream.chunks, upstream.hold_at_chunk = 20, 1  # every stream is still open when its client leaves
    mnemo, user, before = pooled, f"leaver-{uuid.uuid4().hex[:8]}", counts(pooled)
    asyncio.run(leave_streams(mnemo, user, clients=8))
    wait_until(lambda: upstream.open_streams == 0, timeout=10)
    wait_until_done_with(mnemo, before, requests=8)
    # A response abandoned mid-body cannot be reused: its connection must be closed, not pooled.
    wait_until(lambda: pool_connections(mnemo) == [], timeout=10)
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 0
    drain(mnemo)
    assert stored(mnemo, user) == 0


def test_completed_streams_return_their_connections_to_the_pool_idle(
    pooled: MnemoThread, upstream: ScriptedUpstream
) -> None:
    mnemo, user = pooled, f"stayer-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        assert post(mnemo, user, "gpt-test", stream=True).text.rstrip().endswith("data: [DONE]")
    connections = pool_connections(mnemo)
    assert len(connections) <= 1 and all(c.is_idle() for c in connections)
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 3
