"""Failures at the gateway: upstream errors relayed in OpenAI's shape with their status,
unreachable and slow upstreams, broken streams, and bad input rejected with a 4xx that names
the offending parameter. None of them leaves a trace in memory."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

from tests.support.probes import (
    Gateways,
    assert_no_trace,
    counts,
    extraction_calls,
    metric,
    new_user,
    stored_texts,
    sync_client,
    user_message,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import Failure, ScriptedUpstream

MAX_BODY_BYTES = 1000
# Small enough to make timeouts quick, large enough that a loaded machine never trips it by accident.
UPSTREAM_TIMEOUT_S = 1.0
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nothing else gets it) but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream, closed_port: int) -> MnemoThread:
    """Every test here uses its own user: a small body limit, a short upstream timeout, no '*'
    route, and a route to a port nobody listens on."""
    return gateways.get(
        server={"max_body_bytes": MAX_BODY_BYTES, "upstream_timeout_s": UPSTREAM_TIMEOUT_S},
        models=[
            {"name": "known", "provider": "openai", "base_url": gateways.upstream_url, "api_key": "sk-test"},
            {"name": "nowhere", "provider": "openai", "base_url": f"http://127.0.0.1:{closed_port}/v1"},
        ],
    )


def post(
    mnemo: MnemoThread, user: str | None, *, headers: dict[str, Any] | None = None, **kwargs: Any
) -> httpx.Response:
    sent = {"Authorization": "Bearer sk-client", **({"X-Mnemo-User-Id": user} if user else {}), **(headers or {})}
    return httpx.post(mnemo.url + "/v1/chat/completions", headers=sent, timeout=10, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, **expected: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    for key, value in expected.items():
        assert body["error"][key] == value, body
    return dict(body["error"])


def assert_nothing_enqueued(mnemo: MnemoThread, upstream: ScriptedUpstream, user: str) -> None:
    # A rejected request is answered before anything could be enqueued, so no settle is needed.
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 0
    assert extraction_calls(upstream) == 0 and stored_texts(mnemo, user) == []


# --- upstream failures ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (401, openai.AuthenticationError),
        (400, openai.BadRequestError),
        (503, openai.InternalServerError),
    ],
)
def test_upstream_error_statuses_are_relayed_in_openai_shape(
    mnemo: MnemoThread, upstream: ScriptedUpstream, status: int, exception: type[openai.APIStatusError], stream: bool
) -> None:
    upstream.failures.append(Failure(status=status))
    user = new_user()
    with pytest.raises(exception) as caught:
        sync_client(mnemo, user).chat.completions.create(
            model="known", messages=user_message("I am here"), stream=stream
        )
    assert caught.value.status_code == status
    assert caught.value.body == {"message": f"scripted {status}", "type": "scripted", "param": None, "code": None}
    assert len(upstream.of_task("chat")) == 1
    assert_nothing_enqueued(mnemo, upstream, user)


def test_an_upstream_error_that_is_not_json_still_reads_as_an_openai_error(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    upstream.failures.append(Failure(status=502, body="<html>bad gateway</html>"))
    user = new_user()
    response = post(mnemo, user, json={"model": "known", "messages": user_message("hi")})
    assert_openai_error(response, 502, type="upstream_error", message="upstream returned HTTP 502")
    assert_nothing_enqueued(mnemo, upstream, user)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unreachable_upstream_is_a_502(mnemo: MnemoThread, upstream: ScriptedUpstream, stream: bool) -> None:
    user = new_user()
    response = post(mnemo, user, json={"model": "nowhere", "messages": user_message("hi"), "stream": stream})
    assert_openai_error(response, 502, type="upstream_error", code="upstream_unreachable")
    with pytest.raises(openai.InternalServerError) as caught:
        sync_client(mnemo, user).chat.completions.create(model="nowhere", messages=user_message("hi"), stream=stream)
    assert caught.value.status_code == 502
    assert_nothing_enqueued(mnemo, upstream, user)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    mnemo: MnemoThread, upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.failures.append(Failure(delay_s=UPSTREAM_TIMEOUT_S * 2.5))
    user = new_user()
    with pytest.raises(openai.InternalServerError) as caught:
        sync_client(mnemo, user).chat.completions.create(model="known", messages=user_message("hi"), stream=stream)
    assert caught.value.status_code == 504
    assert caught.value.body == {
        "message": "upstream timed out",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_timeout",
    }
    assert_nothing_enqueued(mnemo, upstream, user)


def read_stream(mnemo: MnemoThread, user: str) -> tuple[str, list[str], openai.APIError | None]:
    """Request id, the content received, and the error the SDK raised mid-stream (if any)."""
    raw = sync_client(mnemo, user).chat.completions.with_raw_response.create(
        model="known", messages=user_message("I live in Lisbon and I love sardines"), stream=True
    )
    received: list[str] = []
    try:
        for chunk in raw.parse():
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as exc:
        return raw.headers["x-mnemo-request-id"], received, exc
    return raw.headers["x-mnemo-request-id"], received, None


def test_a_stream_cut_mid_way_ends_with_an_error_event_and_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.chunks = 6
    upstream.failures.append(Failure(cut_after_chunks=2))
    user, before = new_user(), counts(mnemo)
    request_id, received, error = read_stream(mnemo, user)
    assert 1 <= len(received) <= 2 and "".join(received) != "Echo: I live in Lisbon and I love sardines"
    assert error is not None and isinstance(error.body, dict)
    assert error.body["type"] == "upstream_error" and error.body["code"] == "upstream_unreachable"
    assert_no_trace(mnemo, upstream, redis_client, user, before=before, request_id=request_id)
    assert upstream.open_streams == 0


def test_a_stream_that_stalls_past_the_timeout_ends_with_an_error_event_and_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.chunks, upstream.hold_at_chunk = 3, 1  # the second chunk never comes
    user, before = new_user(), counts(mnemo)
    request_id, received, error = read_stream(mnemo, user)
    assert len(received) == 1
    assert error is not None and isinstance(error.body, dict) and error.body["code"] == "upstream_timeout"
    assert_no_trace(mnemo, upstream, redis_client, user, before=before, request_id=request_id)


def test_a_malformed_stream_ends_with_an_error_event_and_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.failures.append(Failure(malformed=True))
    user, before = new_user(), counts(mnemo)
    request_id, received, error = read_stream(mnemo, user)
    assert "".join(received) != "Echo: I live in Lisbon and I love sardines"
    assert error is not None and isinstance(error.body, dict)
    assert error.body["type"] == "upstream_error" and error.body["code"] == "bad_stream"
    assert_no_trace(mnemo, upstream, redis_client, user, before=before, request_id=request_id)


def test_the_raw_sse_of_a_malformed_stream_never_carries_the_bad_line(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    upstream.failures.append(Failure(malformed=True))
    response = post(mnemo, new_user(), json={"model": "known", "messages": user_message("hi"), "stream": True})
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert "{not json" not in response.text
    assert json.loads(events[-1])["error"]["code"] == "bad_stream"
    assert "[DONE]" not in events


# --- bad input --------------------------------------------------------------------------

VALID = {"model": "known", "messages": user_message("I live in Lisbon")}

BAD_BODIES = {
    "malformed-json": (b'{"model": "known", "messages": [', None),
    "empty-body": (b"", None),
    "whitespace-body": (b"  \n ", None),
    "array-body": (b'[{"role": "user", "content": "hi"}]', None),
    "string-body": (b'"I live in Lisbon"', None),
    "null-body": (b"null", None),
    "non-utf8-body": (b'{"model": "known", "messages": [{"role": "user", "content": "caf\xe9"}]}', None),
    "missing-messages": ({"model": "known"}, "messages"),
    "empty-messages": ({"model": "known", "messages": []}, "messages"),
    "messages-object": ({"model": "known", "messages": {"role": "user", "content": "hi"}}, "messages"),
    "messages-string": ({"model": "known", "messages": "hi"}, "messages"),
    "message-not-object": ({"model": "known", "messages": ["hi"]}, "messages[0]"),
    "message-without-role": ({"model": "known", "messages": [{"content": "hi"}]}, "messages[0]"),
    "content-number": ({"model": "known", "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
    "missing-model": ({"messages": user_message("hi")}, "model"),
    "model-number": ({"model": 4, "messages": user_message("hi")}, "model"),
    "stream-string": ({**VALID, "stream": "true"}, "stream"),
    "stream-number": ({**VALID, "stream": 1}, "stream"),
    "user-with-control-char": ({**VALID, "user": "bad\x01user"}, "user"),
    "user-with-space": ({**VALID, "user": "bad user"}, "user"),
}


@pytest.mark.parametrize(("body", "param"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_bodies_are_a_400_that_names_the_parameter(
    mnemo: MnemoThread, upstream: ScriptedUpstream, body: bytes | dict[str, Any], param: str | None
) -> None:
    user = new_user()
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    user_in_body = isinstance(body, dict) and "user" in body
    response = post(mnemo, None if user_in_body else user, **sent)
    assert_openai_error(response, 400, type="invalid_request_error", param=param)
    assert upstream.requests == []
    assert_nothing_enqueued(mnemo, upstream, user)


BAD_HEADERS = {
    "user-with-spaces": ({"X-Mnemo-User-Id": "alice smith"}, "x-mnemo-user-id"),
    "user-with-tab": ({"X-Mnemo-User-Id": "alice\tsmith"}, "x-mnemo-user-id"),
    "user-non-ascii": ({"X-Mnemo-User-Id": "caf\u00e9".encode()}, "x-mnemo-user-id"),
    "user-starting-with-dot": ({"X-Mnemo-User-Id": ".alice"}, "x-mnemo-user-id"),
    "user-too-long": ({"X-Mnemo-User-Id": "a" * 129}, "x-mnemo-user-id"),
    "agent-with-slash": ({"X-Mnemo-Agent-Id": "a/b"}, "x-mnemo-agent-id"),
    "session-with-quote": ({"X-Mnemo-Session-Id": 's"1'}, "x-mnemo-session-id"),
    "memory-mode-unknown": ({"X-Mnemo-Memory": "sometimes"}, "x-mnemo-memory"),
    "memory-mode-boolean": ({"X-Mnemo-Memory": "true"}, "x-mnemo-memory"),
    "extraction-unknown": ({"X-Mnemo-Extraction": "magic"}, "x-mnemo-extraction"),
}


@pytest.mark.parametrize(("headers", "param"), list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_bad_mnemo_headers_are_a_400_that_names_the_header(
    mnemo: MnemoThread, upstream: ScriptedUpstream, headers: dict[str, Any], param: str
) -> None:
    user = new_user()
    response = post(mnemo, user, headers=headers, json=VALID)
    assert_openai_error(response, 400, type="invalid_request_error", param=param)
    assert upstream.requests == []
    assert_nothing_enqueued(mnemo, upstream, user)


@pytest.mark.parametrize("value", [b"bad\x01user", b"bad\x7fuser", b"bad\x00user"], ids=["soh", "del", "nul"])
def test_control_characters_in_a_header_are_refused_before_the_app(
    mnemo: MnemoThread, upstream: ScriptedUpstream, value: bytes
) -> None:
    """httpx will not send these; on the raw socket, uvicorn's HTTP parser answers 400 itself."""
    body = json.dumps(VALID).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mnemo\r\nContent-Type: application/json\r\n"
        b"X-Mnemo-User-Id: " + value + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", mnemo.settings.server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert upstream.requests == []
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == 0


def test_a_body_over_the_limit_is_a_413_with_or_without_content_length(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    user = new_user()
    big = json.dumps({"model": "known", "messages": user_message("I live in Lisbon " * 100)}).encode()
    assert len(big) > MAX_BODY_BYTES
    declared = post(mnemo, user, content=big)
    assert_openai_error(declared, 413, code="request_too_large")
    chunked = post(mnemo, user, content=iter([big[:600], big[600:]]))
    assert "content-length" not in chunked.request.headers
    assert_openai_error(chunked, 413, code="request_too_large")
    with pytest.raises(openai.APIStatusError) as caught:
        sync_client(mnemo, user).chat.completions.create(model="known", messages=user_message("x" * 2000))
    assert caught.value.status_code == 413
    assert upstream.requests == []
    assert_nothing_enqueued(mnemo, upstream, user)


def test_a_body_just_under_the_limit_is_accepted(mnemo: MnemoThread, upstream: ScriptedUpstream) -> None:
    body = json.dumps({"model": "known", "messages": user_message("hi")}).encode()
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(body) == MAX_BODY_BYTES
    response = post(mnemo, None, content=body)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Echo: hi"


def test_an_unknown_model_without_a_catch_all_route_is_a_404(mnemo: MnemoThread, upstream: ScriptedUpstream) -> None:
    user = new_user()
    with pytest.raises(openai.NotFoundError) as caught:
        sync_client(mnemo, user).chat.completions.create(model="gpt-nope", messages=user_message("hi"))
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "message": "The model `gpt-nope` does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert upstream.requests == []
    assert_nothing_enqueued(mnemo, upstream, user)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_wrong_method_on_chat_completions_is_an_openai_shaped_405(
    mnemo: MnemoThread, upstream: ScriptedUpstream, method: str
) -> None:
    response = httpx.request(method, mnemo.url + "/v1/chat/completions", headers={"X-Mnemo-User-Id": "m"})
    assert_openai_error(response, 405, type="invalid_request_error", code="method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert upstream.requests == []


def test_a_wrong_method_outside_the_api_still_names_the_allowed_methods(mnemo: MnemoThread) -> None:
    response = httpx.post(mnemo.url + "/healthz")
    assert response.status_code == 405 and "GET" in response.headers["allow"]


def test_an_unknown_api_path_is_an_openai_shaped_404(mnemo: MnemoThread) -> None:
    # Other /v1/* paths are relayed upstream (test_passthrough.py); the memory API's stay Mnemo's.
    response = httpx.post(mnemo.url + "/v1/memories/mem_x/unknown", json={"model": "known", "prompt": "hi"})
    assert_openai_error(response, 404, type="invalid_request_error", code="not_found")


def test_rejections_are_counted_by_status(mnemo: MnemoThread, upstream: ScriptedUpstream) -> None:
    before = metric(mnemo, "mnemo_chat_errors_total", status="400")
    post(mnemo, new_user(), json={"model": "known", "messages": []})
    assert metric(mnemo, "mnemo_chat_errors_total", status="400") == before + 1


def test_the_gateway_still_answers_after_all_of_that(mnemo: MnemoThread) -> None:
    reply = sync_client(mnemo).chat.completions.create(model="known", messages=user_message("still there?"))
    assert reply.choices[0].message.content == "Echo: still there?"
