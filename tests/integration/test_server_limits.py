"""The server protects itself from slow and greedy clients: header and body deadlines, a
connection limit, and a memory budget for the bodies in flight. Driven against the real
``mnemo serve`` process (uvicorn with Mnemo's protocol, as a user runs it), over raw sockets
where a client has to misbehave, with small limits so that each test stays short."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import redis as redis_sync
import yaml
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

from mnemo.queue import exchange_job_id
from tests.conftest import REDIS_URL, wait_until
from tests.support.servers import free_port
from tests.support.upstream import ScriptedUpstream

logger = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
BODY_MIN_BYTES_PER_S = 1024
MAX_CONNECTIONS = 24
MAX_BODY_BYTES = 4 * 1024 * 1024
BUDGET_BYTES = 100 * 1024 * 1024
# Well past every deadline: a connection still open by then was never going to be closed.
GRACE_S = 10.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> Any:
        return json.loads(self.body)["error"]["code"]


class ServeProcess:
    """`mnemo serve` in a subprocess: the gateway alone (no worker), so the server's RSS is the
    gateway's, and what its chats enqueue waits in the test Redis under its own queue name."""

    def __init__(self, directory: Path, upstream_url: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.queue = f"mnemo:test:{uuid.uuid4().hex}"
        config = {
            "data_dir": str(directory / "data"),
            "server": {
                "port": self.port,
                "max_body_bytes": MAX_BODY_BYTES,
                "header_timeout_s": HEADER_TIMEOUT_S,
                "body_timeout_s": BODY_TIMEOUT_S,
                "body_min_bytes_per_s": BODY_MIN_BYTES_PER_S,
                "max_connections": MAX_CONNECTIONS,
                "max_bytes_in_flight": BUDGET_BYTES,
            },
            "models": [{"name": "*", "provider": "openai", "base_url": upstream_url, "api_key": "sk-up"}],
            "redis": {"url": REDIS_URL, "queue_name": self.queue},
        }
        self.config = directory / "mnemo.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None
        self.sockets: list[socket.socket] = []

    def start(self) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
        command = [sys.executable, "-m", "mnemo_cli.main", "serve", "--config", str(self.config)]
        with (self.directory / "mnemo.log").open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, env=env, stdout=log, stderr=log)
        wait_until(self.ready, timeout=60, interval=0.1)
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.directory / "mnemo.log").read_text(errors="replace"))
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def rss(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def client(self) -> openai.OpenAI:
        """A client naming no user: its chats are answered, and nothing is recorded."""
        return openai.OpenAI(base_url=self.url + "/v1", api_key="sk-client", max_retries=0)

    def connect(self) -> socket.socket:
        """A raw connection, for a client that misbehaves; closed at the end of the test."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=GRACE_S)
        self.sockets.append(sock)
        return sock

    def close_sockets(self) -> None:
        while self.sockets:
            self.sockets.pop().close()


@pytest.fixture(scope="module")
def mnemo(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: tuple[ScriptedUpstream, Any]
) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp_path_factory.mktemp("server_limits"), upstream_server[1].url + "/v1")
    try:
        yield process.start()
    finally:
        process.stop()
        client = redis_sync.Redis.from_url(REDIS_URL)
        client.delete(process.queue, *client.scan_iter(process.queue + ":*"))  # the queue's per-user keys
        client.close()


@pytest.fixture(autouse=True)
def close_raw_sockets(mnemo: ServeProcess) -> Iterator[None]:
    yield
    mnemo.close_sockets()


def read_response(sock: socket.socket, deadline: float) -> tuple[RawResponse | None, bool]:
    """One response, and whether the server closed the connection after it (by ``deadline``)."""
    data = b""
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if separator:
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:])
            headers = {name.lower(): value for name, value in headers.items()}
            length = int(headers.get("content-length", "-1"))
            if 0 <= length <= len(rest):
                response = RawResponse(int(lines[0].split()[1]), headers, rest[:length])
                if headers.get("connection") != "close":
                    return response, False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the connection was still open {GRACE_S} s past its deadline; read {data[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not data:
                return None, True
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
            return RawResponse(int(lines[0].split()[1]), headers, rest), True
        data += chunk


def trickle_until_closed(
    sockets: list[socket.socket], payloads: list[bytes], interval_s: float, deadline: float
) -> list[bytes]:
    """Send each socket its payload a byte every ``interval_s`` (an empty one: nothing) and read
    whatever comes back, until the server has closed every one of them; what each received."""
    received = [b""] * len(sockets)
    sent = [0] * len(sockets)
    open_ones = set(range(len(sockets)))
    while open_ones:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_ones)} of {len(sockets)} slow connections still open past the deadline")
        for index in list(open_ones):
            if sent[index] < len(payloads[index]):
                try:
                    sockets[index].send(payloads[index][sent[index] : sent[index] + 1])
                    sent[index] += 1
                except OSError:
                    pass  # closed by the server: the read below sees it
        readable, _, _ = select.select([sockets[i] for i in open_ones], [], [], interval_s)
        for sock in readable:
            index = sockets.index(sock)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[index] += chunk
            else:
                open_ones.discard(index)
    return received


def chat_request(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: mnemo\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def assert_answered(received: bytes, status: int, code: str) -> None:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), received[:200]
    assert json.loads(body)["error"]["code"] == code


def test_connections_that_never_finish_their_headers_are_closed(mnemo: ServeProcess) -> None:
    silent = [mnemo.connect() for _ in range(8)]
    slow = [mnemo.connect() for _ in range(8)]
    # A byte every 0.1 s: never a stall, but the headers never end within the timeout.
    headers = chat_request("/v1/chat/completions", 2) + b"{}"
    started = time.monotonic()
    received = trickle_until_closed(
        silent + slow, [b""] * len(silent) + [headers] * len(slow), 0.1, started + HEADER_TIMEOUT_S + GRACE_S
    )
    logger.info(
        "%d slow-header connections all closed %.2f s after they opened", len(received), time.monotonic() - started
    )
    assert received[: len(silent)] == [b""] * len(silent)  # nothing asked, nothing answered
    for answer in received[len(silent) :]:
        assert_answered(answer, 408, "request_timeout")

    oversized = mnemo.connect()
    oversized.sendall(b"GET /healthz HTTP/1.1\r\nHost: mnemo\r\nX-Padding: " + b"a" * 100_000 + b"\r\n\r\n")
    response, closed = read_response(oversized, time.monotonic() + GRACE_S)
    assert response is not None and response.status == 431 and closed
    assert response.error_code() == "headers_too_large"
    assert httpx.get(mnemo.url + "/healthz", timeout=5).status_code == 200


def test_a_body_trickled_or_stalled_is_cut_with_408_while_a_slow_upstream_stream_is_not(
    mnemo: ServeProcess, upstream: ScriptedUpstream
) -> None:
    upstream.first_chunk_delay_s = HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 0.5  # longer than either deadline
    replies: list[str] = []

    def slow_stream() -> None:
        with mnemo.client() as client:
            stream = client.chat.completions.create(
                model="any-model", messages=[{"role": "user", "content": "take your time"}], stream=True
            )
            replies.append("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))

    streaming = threading.Thread(target=slow_stream)
    streaming.start()
    trickled, stalled, unrouted = mnemo.connect(), mnemo.connect(), mnemo.connect()
    trickled.sendall(chat_request("/v1/chat/completions", 1000))  # then a byte every 0.25 s: 4 B/s
    stalled.sendall(chat_request("/v1/chat/completions", 1000) + b'{"model": "m", ')  # then nothing
    # A body no handler reads: answered 404 at once, then trickled on; the server still cuts it.
    unrouted.sendall(chat_request("/no-such-route", 1000))
    started = time.monotonic()
    received = trickle_until_closed(
        [trickled, stalled, unrouted], [b" " * 1000, b"", b" " * 1000], 0.25, started + BODY_TIMEOUT_S + GRACE_S
    )
    logger.info("trickled, stalled and unread bodies all closed %.2f s after their headers", time.monotonic() - started)
    assert_answered(received[0], 408, "request_timeout")
    assert_answered(received[1], 408, "request_timeout")
    assert received[2].startswith(b"HTTP/1.1 404 ") and b" 408 " not in received[2]

    streaming.join(30)
    assert replies == ["Echo: take your time"]


def test_connections_past_the_limit_are_answered_503_and_chats_work_once_they_close(mnemo: ServeProcess) -> None:
    held = [mnemo.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # served, then kept alive: each still counts as an open connection
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: mnemo\r\n\r\n")
            response, closed = read_response(sock, time.monotonic() + GRACE_S)
            assert response is not None and response.status == 200 and not closed
        extra = mnemo.connect()
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: mnemo\r\n\r\n")
        response, closed = read_response(extra, time.monotonic() + GRACE_S)
        assert response is not None and response.status == 503 and closed
        assert response.headers["retry-after"] == "1"
        assert response.error_code() == "server_busy"

        # An idle kept-alive connection awaits no headers: past the header timeout it still serves.
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: mnemo\r\n\r\n")
        response, closed = read_response(held[0], time.monotonic() + GRACE_S)
        assert response is not None and response.status == 200 and not closed
    finally:
        mnemo.close_sockets()

    wait_until(lambda: httpx.get(mnemo.url + "/healthz", timeout=5).status_code == 200, timeout=GRACE_S)
    with mnemo.client() as client:
        reply = client.chat.completions.create(model="any-model", messages=[{"role": "user", "content": "still here?"}])
    assert reply.choices[0].message.content == "Echo: still here?"


def tiny_messages_body(size: int) -> bytes:
    """A streaming chat of ``size`` bytes made of tiny messages: the shape that grows most once parsed."""
    message = {"role": "user", "content": "hi"}
    count = size // len(json.dumps(message).encode() + b", ")
    return json.dumps({"model": "any-model", "stream": True, "messages": [message] * count}).encode()


def post(mnemo: ServeProcess, body: bytes, user: str) -> httpx.Response:
    headers = {"content-type": "application/json", "X-Mnemo-User-Id": user}
    return httpx.post(mnemo.url + "/v1/chat/completions", content=body, headers=headers, timeout=60)


class PeakRss:
    def __init__(self, mnemo: ServeProcess) -> None:
        self.mnemo = mnemo
        self.peak = mnemo.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.mnemo.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def test_concurrent_large_bodies_past_the_budget_get_429_and_the_server_rss_stays_bounded(
    mnemo: ServeProcess, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    user = f"limits-{uuid.uuid4().hex[:8]}"
    body = tiny_messages_body(2 * 1024 * 1024)
    admitted: list[httpx.Response] = []
    try:
        admitted.append(post(mnemo, body, user))  # alone: fits, and warms up what one large body touches
        assert admitted[-1].status_code == 200
        # Each admitted stream is held open a second, so that without a budget all of them are
        # in flight, parsed, at once.
        upstream.first_chunk_delay_s = 1.0
        baseline = mnemo.rss()
        with PeakRss(mnemo) as rss, ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: post(mnemo, body, user), range(8)))
        admitted += [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(admitted) > 1 and refused and len(admitted) + len(refused) == 9
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "server_busy"
        grown = rss.peak - baseline
        seen = f"RSS {baseline / 2**20:.0f} MiB -> peak {rss.peak / 2**20:.0f} MiB (+{grown / 2**20:.0f} MiB)"
        logger.info("%s with %d of 8 large bodies refused", seen, len(refused))
        # The budget bounds what the bodies in flight hold; 64 MiB for everything else that moves.
        assert grown < BUDGET_BYTES + 64 * 2**20, seen

        upstream.first_chunk_delay_s = 0.0
        admitted.append(post(mnemo, tiny_messages_body(1000), user))  # the budget is free again
        assert admitted[-1].status_code == 200
    finally:
        for response in admitted:
            job_id = exchange_job_id(response.headers["x-mnemo-request-id"])
            redis_client.delete(
                *(prefix + job_id for prefix in (job_key_prefix, in_progress_key_prefix, result_key_prefix))
            )
