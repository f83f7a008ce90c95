"""Every other OpenAI endpoint through Mnemo: the real openai SDK against an upstream that records
the exact bytes it receives. Bodies, paths, queries, statuses and headers are relayed unchanged
(both ways streamed: a 50 MB upload does not grow the gateway's RSS), the destination and its key
come from configuration only, and Mnemo's own routes keep priority."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.support.echo_upstream import SPEECH_PARTS, EchoUpstream, RecordingTransport, Scripted
from tests.support.probes import Gateways, metric, stored_texts
from tests.support.process import MnemoProcess
from tests.support.servers import MnemoThread, ServerThread

MAX_BODY_BYTES = 4096  # the chat limit: uploads are not held to it
MAX_PASSTHROUGH_BYTES = 300_000
logger = logging.getLogger(__name__)
ADMIN, ACME = "admin-key-0123456789abcdef", "acme-key-0123456789abcdef"
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[EchoUpstream, ServerThread]]:
    echo = EchoUpstream()
    server = ServerThread(echo.app()).start()
    yield echo, server
    server.stop()


@pytest.fixture(scope="module")
def capture_server() -> Iterator[tuple[EchoUpstream, ServerThread]]:
    """Another host, which no request may ever reach."""
    capture = EchoUpstream()
    server = ServerThread(capture.app()).start()
    yield capture, server
    server.stop()


@pytest.fixture
def echo(echo_server: tuple[EchoUpstream, ServerThread]) -> Iterator[EchoUpstream]:
    echo_server[0].reset()
    yield echo_server[0]
    echo_server[0].reset()


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def mnemo(gateways: Gateways, echo_server: tuple[EchoUpstream, ServerThread], closed_port: int) -> MnemoThread:
    """Open (no keys); '*' and two more OpenAI-compatible entries on the echo upstream (one with
    its own key and base path, one without a key), one litellm entry, one unreachable."""
    url = echo_server[1].url
    return gateways.get(
        server={
            "max_body_bytes": MAX_BODY_BYTES,
            "max_passthrough_bytes": MAX_PASSTHROUGH_BYTES,
            "upstream_timeout_s": 1.0,
        },
        models=[
            {"name": "embed-b", "provider": "openai", "base_url": url + "/b/v1", "api_key": "sk-b"},
            {"name": "keyless", "provider": "openai", "base_url": url + "/k/v1"},
            {"name": "claude", "provider": "anthropic", "model": "claude-x", "api_key": "sk-ant"},
            {"name": "nowhere", "provider": "openai", "base_url": f"http://127.0.0.1:{closed_port}/v1"},
            {"name": "*", "provider": "openai", "base_url": url + "/v1", "api_key": "sk-up"},
        ],
    )


@pytest.fixture
def keyed(gateways: Gateways, echo_server: tuple[EchoUpstream, ServerThread]) -> MnemoThread:
    """Keys configured, the memory API moved to /mnemo/v1, and one keyless entry serving requests
    without a model: a client's Authorization there goes upstream, so a Mnemo key must never."""
    return gateways.get(
        server={"memory_api_prefix": "/mnemo/v1", "passthrough_model": "gpt-k"},
        models=[{"name": "gpt-k", "provider": "openai", "base_url": echo_server[1].url + "/v1"}],
        auth={"admin_keys": [ADMIN], "tenants": [{"id": "acme", "keys": [ACME]}]},
    )


def sdk(mnemo: MnemoThread, transport: RecordingTransport | None = None, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=mnemo.url + "/v1",
        api_key="sk-client",
        max_retries=0,
        default_headers={"X-Mnemo-User-Id": "alice", "Cookie": "session=mnemo-client", **headers},
        http_client=httpx.Client(transport=transport or RecordingTransport(), timeout=30),
    )


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    return dict(body["error"])


def raw_status(port: int, request: bytes) -> int:
    """One request sent as raw bytes (clients normalise paths; attackers do not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_embeddings_and_moderations_reach_the_upstream_byte_for_byte_with_the_configured_key(
    mnemo: MnemoThread, echo: EchoUpstream
) -> None:
    transport = RecordingTransport()
    client = sdk(mnemo, transport)
    enqueued = metric(mnemo, "mnemo_exchanges_enqueued_total")

    result = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    moderation = client.moderations.create(model="omni-moderation-latest", input="hello")

    assert [item.embedding for item in result.data] == [[0.0, 0.5, -1.0], [1.0, 0.5, -1.0]]
    assert moderation.results[0].flagged is False
    assert [(r.method, r.path) for r in echo.requests] == [("POST", "/v1/embeddings"), ("POST", "/v1/moderations")]
    assert [r.body for r in echo.requests] == [sent.body for sent in transport.sent]
    for received, sent in zip(echo.requests, transport.sent, strict=True):
        assert received.header("authorization") == "Bearer sk-up"  # the route's key, never sk-client
        assert received.header("content-type") == sent.headers["content-type"] == "application/json"
        assert received.header("user-agent") == sent.headers["user-agent"]
        assert received.header("host") == echo_host(mnemo, echo)
        assert not {"cookie", "connection"} & received.header_names
        assert not [name for name in received.header_names if name.startswith("x-mnemo-")]
    # No memory involved: nothing recorded for the user named in X-Mnemo-User-Id.
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == enqueued
    assert stored_texts(mnemo, "alice") == []


def echo_host(mnemo: MnemoThread, echo: EchoUpstream) -> str:
    base_url = next(m.base_url for m in mnemo.settings.models if m.name == "*")
    assert base_url is not None
    return httpx.URL(base_url).netloc.decode()


def test_the_json_model_field_picks_the_route_and_its_key(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    client = sdk(mnemo)
    client.embeddings.create(model="embed-b", input="routed by name")
    client.embeddings.create(model="keyless", input="the client's key")
    assert [(r.path, r.header("authorization")) for r in echo.requests] == [
        ("/b/v1/embeddings", "Bearer sk-b"),
        ("/k/v1/embeddings", "Bearer sk-client"),  # no key configured: the client's own, to this base_url only
    ]

    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="claude", input="a litellm route has no embeddings endpoint")
    assert caught.value.status_code == 400 and caught.value.param == "model"
    assert caught.value.code == "unsupported_endpoint"
    with pytest.raises(openai.APIStatusError) as unreachable:
        client.embeddings.create(model="nowhere", input="x")
    assert unreachable.value.status_code == 502 and unreachable.value.code == "upstream_unreachable"
    assert len(echo.requests) == 2


def test_the_model_list_is_mnemos_and_a_model_lookup_is_relayed(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    client = sdk(mnemo)
    assert [model.id for model in client.models.list()] == ["embed-b", "keyless", "claude", "nowhere"]
    assert echo.requests == []

    model = client.models.retrieve("gpt-4o-mini")

    assert (model.id, model.owned_by) == ("gpt-4o-mini", "echo")
    assert [(r.method, r.path, r.header("authorization")) for r in echo.requests] == [
        ("GET", "/v1/models/gpt-4o-mini", "Bearer sk-up")
    ]


def test_a_file_upload_and_an_audio_transcription_arrive_byte_for_byte(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    transport = RecordingTransport()
    client = sdk(mnemo, transport)
    data = bytes(range(256)) * 300 + b'\r\n--not-the-boundary\r\n{"model": "embed-b"}\r\n'
    audio = b"RIFF" + bytes(reversed(range(256))) * 100

    uploaded = client.files.create(file=("data.jsonl", data, "application/jsonl"), purpose="batch")
    # A multipart body is not searched for a model: it goes to the default ('*') entry.
    transcript = client.audio.transcriptions.create(model="embed-b", file=("clip.wav", audio, "audio/wav"))

    upload, transcription = echo.requests
    assert (upload.path, transcription.path) == ("/v1/files", "/v1/audio/transcriptions")
    for received, sent in zip(echo.requests, transport.sent, strict=True):
        assert received.complete and received.body == sent.body
        assert received.header("content-type") == sent.headers["content-type"]  # the same boundary
        assert received.header("content-length") == sent.headers["content-length"]
        assert received.header("authorization") == "Bearer sk-up"
    assert data in upload.body and audio in transcription.body
    assert uploaded.bytes == len(upload.body) > MAX_BODY_BYTES
    assert transcript.text == f"heard {len(transcription.body)} bytes"


def test_a_streamed_response_is_relayed_as_it_arrives(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    """The upstream sends its first part and waits for the client to have it before the rest."""
    echo.speech_gate_timeout_s = 10
    client = sdk(mnemo)
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="hi") as response:
        parts = response.iter_bytes()
        first = next(parts)
        echo.speech_gate.set()
        rest = b"".join(parts)
    assert echo.speech_gate_was_opened is True  # the client had the first part while the upstream waited
    assert first == SPEECH_PARTS[0] and first + rest == b"".join(SPEECH_PARTS)
    assert response.headers["content-type"] == "audio/mpeg"


def test_query_strings_are_relayed_as_sent(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    transport = RecordingTransport()
    sdk(mnemo, transport).files.list(purpose="batch", limit=2)
    query = b"after=a%2Fb&x=1+2&x=%E2%9C%93&empty=&flag"
    httpx.get(f"{mnemo.url}/v1/batches?{query.decode()}", timeout=10).raise_for_status()

    assert [(r.path, r.query) for r in echo.requests] == [
        ("/v1/files", transport.sent[0].target.partition("?")[2].encode()),
        ("/v1/batches", query),
    ]
    assert set(echo.requests[0].query.split(b"&")) == {b"purpose=batch", b"limit=2"}


def test_upstream_errors_are_relayed_with_their_status_body_and_headers(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    error = b'{"error": {"message": "No such File object: file-gone", "type": "invalid_request_error", "param": "id"}}'
    headers = [("content-type", "application/json"), ("x-request-id", "req_upstream"), ("openai-version", "2020-10-01")]
    hop = [("set-cookie", "upstream-session=1"), ("connection", "x-hop"), ("x-hop", "1"), ("keep-alive", "timeout=5")]
    echo.scripted["/v1/files/file-gone"] = Scripted(404, error, headers + hop)
    echo.scripted["/v1/images/generations"] = Scripted(429, b"slow down", [("retry-after", "7")])
    client = sdk(mnemo)

    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve("file-gone")
    assert caught.value.body == {
        "message": "No such File object: file-gone",
        "type": "invalid_request_error",
        "param": "id",
    }
    assert caught.value.request_id == "req_upstream"

    response = httpx.get(mnemo.url + "/v1/files/file-gone", timeout=10)
    assert (response.status_code, response.content) == (404, error)
    assert response.headers["x-request-id"] == "req_upstream" and response.headers["openai-version"] == "2020-10-01"
    assert not {"set-cookie", "x-hop", "keep-alive"} & set(response.headers)
    limited = httpx.post(mnemo.url + "/v1/images/generations", json={"model": "dall-e-3", "prompt": "x"}, timeout=10)
    assert (limited.status_code, limited.content, limited.headers["retry-after"]) == (429, b"slow down", "7")


def test_a_slow_upstream_is_a_504(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    echo.scripted["/v1/batches/batch_slow"] = Scripted(200, b"{}", delay_s=3.0)  # upstream_timeout_s is 1
    error = openai_error(httpx.get(mnemo.url + "/v1/batches/batch_slow", timeout=10), 504)
    assert error["code"] == "upstream_timeout"


def test_no_path_or_header_reaches_another_host(
    mnemo: MnemoThread, echo: EchoUpstream, capture_server: tuple[EchoUpstream, ServerThread]
) -> None:
    capture, server = capture_server
    capture.reset()
    other = server.url.removeprefix("http://")
    port = mnemo.settings.server.port
    for target in (
        "/v1/../../x",
        "/v1/files/../../../x",
        "/v1/%2e%2e/%2E%2E/x",
        "/v1/files%2F..%2F..%2Fx",
        "/v1/files/..%5C..%5Cx",
        f"/v1//{other}/v1/models",
        "/v1/files/%00",
    ):
        request = f"GET {target} HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n".encode()
        assert raw_status(port, request) == 400, target
    assert echo.requests == []

    # An absolute-form target names a host: it is not the one requests go to.
    absolute = f"GET http://{other}/v1/models/x HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    assert raw_status(port, absolute.encode()) in (200, 400, 404)
    spoofed = {"Host": other, "X-Forwarded-Host": other, "Forwarded": f"host={other}", "X-Forwarded-Proto": "http"}
    assert httpx.get(mnemo.url + "/v1/models/x", headers=spoofed, timeout=10).status_code == 200

    assert capture.requests == []
    assert {r.header("host") for r in echo.requests} == {echo_host(mnemo, echo)}
    assert not [name for r in echo.requests for name in r.header_names if name.startswith("x-forwarded-")]
    assert not [r for r in echo.requests if "forwarded" in r.header_names]


def test_mnemos_own_paths_keep_priority(mnemo: MnemoThread, echo: EchoUpstream) -> None:
    assert openai_error(httpx.get(mnemo.url + "/v1/chat/completions", timeout=10), 405)["code"] == "method_not_allowed"
    assert openai_error(httpx.delete(mnemo.url + "/v1/models", timeout=10), 405)["code"] == "method_not_allowed"
    assert openai_error(httpx.get(mnemo.url + "/v1/memories/a/b/c", timeout=10), 404)["code"] == "not_found"
    assert openai_error(httpx.put(mnemo.url + "/v1/memories", timeout=10), 405)["code"] == "method_not_allowed"
    assert echo.requests == []


def test_the_passthrough_body_limit_is_its_own_and_is_enforced_while_streaming(
    mnemo: MnemoThread, echo: EchoUpstream
) -> None:
    declared = httpx.post(mnemo.url + "/v1/files", content=b"x" * (MAX_PASSTHROUGH_BYTES + 1), timeout=10)
    assert openai_error(declared, 413)["code"] == "request_too_large"
    assert echo.requests == []  # refused before the upstream is called

    def chunked() -> Iterator[bytes]:
        for _ in range(MAX_PASSTHROUGH_BYTES // 65536 + 2):
            yield b"y" * 65536

    streamed = httpx.post(mnemo.url + "/v1/files", content=chunked(), timeout=10)
    assert openai_error(streamed, 413)["code"] == "request_too_large"
    assert not [r for r in echo.requests if r.complete]  # the upload was broken off, never delivered whole
    # Over the chat limit (MAX_BODY_BYTES) and under this one: relayed.
    fits = httpx.post(mnemo.url + "/v1/files", content=b"z" * (MAX_BODY_BYTES * 10), timeout=10)
    assert fits.status_code == 200 and echo.requests[-1].complete and echo.requests[-1].size == MAX_BODY_BYTES * 10


def test_with_keys_the_passthrough_needs_a_mnemo_key_and_never_relays_one(
    keyed: MnemoThread, echo: EchoUpstream
) -> None:
    files = keyed.url + "/v1/files"
    missing = httpx.get(files, headers={"Authorization": "Bearer sk-client"}, timeout=10)
    assert openai_error(missing, 401)["code"] == "missing_api_key"
    # A Mnemo key in Authorization is not taken here (Authorization is the upstream's key): it is
    # refused, so it never reaches the keyless upstream.
    as_bearer = httpx.get(files, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert openai_error(as_bearer, 401)["code"] == "missing_api_key"
    assert echo.requests == []

    client = sdk(keyed, **{"X-Mnemo-Api-Key": ACME})
    client.files.list()
    client.embeddings.create(model="gpt-k", input="tenant key")
    assert [(r.path, r.header("authorization")) for r in echo.requests] == [
        ("/v1/files", "Bearer sk-client"),
        ("/v1/embeddings", "Bearer sk-client"),
    ]
    assert not [r for r in echo.requests if ACME in str(r.headers) or ADMIN in str(r.headers)]


def test_the_memory_api_prefix_moves_the_memory_routes(keyed: MnemoThread, echo: EchoUpstream) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = httpx.post(
        keyed.url + "/mnemo/v1/memories", json={"user_id": "alice", "facts": ["I live in Lisbon"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    listed = httpx.get(keyed.url + "/mnemo/v1/memories", params={"user_id": "alice"}, headers=admin, timeout=10)
    assert [m["text"] for m in listed.json()["data"]] == ["I live in Lisbon"]
    assert echo.requests == []

    # /v1/memories is now the upstream's.
    relayed = httpx.get(
        keyed.url + "/v1/memories", params={"user_id": "alice"}, headers={"X-Mnemo-Api-Key": ADMIN}, timeout=10
    )
    assert relayed.json() == {"method": "GET", "path": "/v1/memories", "query": "user_id=alice"}
    paths = httpx.get(keyed.url + "/openapi.json", timeout=10).json()["paths"]
    assert "/mnemo/v1/memories" in paths and "/v1/memories" not in paths


@pytest.mark.timeout(300)
def test_a_50_mb_upload_streams_through_mnemo_up_without_growing_its_memory(
    tmp_path: Path, echo_server: tuple[EchoUpstream, ServerThread]
) -> None:
    """`mnemo up` as users run it; its RSS sampled while a 50 MB file goes through to an upstream
    that reads slowly (so a gateway that buffered would hold the whole file meanwhile)."""
    echo, server = echo_server
    echo.reset()
    mnemo = MnemoProcess(tmp_path, server.url + "/v1").start()
    try:
        assert mnemo.process is not None
        process = psutil.Process(mnemo.process.pid)
        transport = RecordingTransport()
        client = openai.OpenAI(
            base_url=mnemo.base_url, api_key="sk-client", max_retries=0, http_client=httpx.Client(transport=transport)
        )
        client.files.create(file=("warm-up.jsonl", b"w" * 2_000_000, "application/jsonl"), purpose="batch")
        data = hashlib.sha256(b"seed").digest() * (50 * 1024 * 1024 // 32)
        echo.read_delay_s = 0.002
        baseline = process.memory_info().rss
        peak = sample_peak_rss(process, lambda: client.files.create(file=("big.jsonl", data), purpose="batch"))
        growth = peak - baseline
        logger.info(
            "mnemo up RSS: %.1f MiB before, %.1f MiB at the peak of a 50 MiB upload", baseline / 2**20, peak / 2**20
        )
        received = echo.requests[-1]
        assert received.complete and received.sha256 == transport.sent[-1].sha256
        assert received.size > len(data)
        assert growth < 10 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB (from {baseline / 2**20:.1f} MiB)"
    finally:
        echo.reset()
        mnemo.stop()
        mnemo.kill()


def sample_peak_rss(process: psutil.Process, action: Any) -> int:
    peak, done = process.memory_info().rss, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join(5)
    return max(peak, process.memory_info().rss)
