"""Bad input at the edge, beyond the 400 table of test_gateway_errors.py: bodies around the
default 10 MiB limit, header-injection attempts, empty and non-text content, and a hypothesis
fuzz of the chat body against a running gateway. Nothing here may be a 5xx or leave a trace
in memory."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mnemo.config import Settings
from mnemo.models import Scope
from tests.conftest import REDIS_URL
from tests.support.probes import drain, metric
from tests.support.servers import MnemoThread, ServerThread, free_port

MIB = 1024 * 1024
DEFAULT_LIMIT = 10 * MIB
COMPLETION = {
    "id": "chatcmpl-fixed",
    "object": "chat.completion",
    "created": 0,
    "model": "fixed",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
}
STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


async def fixed_answer(request: Request) -> Response:
    """An upstream that answers anything the gateway forwards: the fuzz is about the gateway."""
    try:
        streaming = json.loads(await request.body()).get("stream") is True
    except (ValueError, AttributeError):
        streaming = False
    if streaming:
        return StreamingResponse(iter([STREAM]), media_type="text/event-stream")
    return JSONResponse(COMPLETION)


@pytest.fixture(scope="module")
def mnemo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MnemoThread]:
    upstream = ServerThread(Starlette(routes=[Route("/v1/chat/completions", fixed_answer, methods=["POST"])])).start()
    config = Settings.model_validate(
        {
            "data_dir": str(tmp_path_factory.mktemp("input") / "data"),
            "server": {"port": free_port()},
            "models": [{"name": "*", "provider": "openai", "base_url": upstream.url + "/v1", "api_key": "sk"}],
            "redis": {"url": REDIS_URL, "queue_name": f"mnemo:test:{uuid.uuid4().hex}"},
            "extraction": {"mode": "raw"},
            "memory": {"score_threshold": -1.0, "retrieval_timeout_ms": 5000},
        }
    )
    running = MnemoThread(config).start()
    yield running
    drain(running)
    running.stop()
    upstream.stop()


def new_user() -> str:
    return f"edge-{uuid.uuid4().hex[:10]}"


def post(mnemo: MnemoThread, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    sent = {"Authorization": "Bearer sk-client", **(headers or {})}
    return httpx.post(mnemo.url + "/v1/chat/completions", headers=sent, timeout=30, **kwargs)


def memories_of(mnemo: MnemoThread, user: str) -> list[str]:
    drain(mnemo)
    return [m.text for m in mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True))]


def test_a_body_over_the_default_10_mib_limit_is_a_413_and_leaves_no_trace(mnemo: MnemoThread) -> None:
    user = new_user()
    enqueued = metric(mnemo, "mnemo_exchanges_enqueued_total")
    text = "I live in Lisbon " * (DEFAULT_LIMIT // 17 + 1)
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    assert len(big) > DEFAULT_LIMIT
    declared = post(mnemo, {"X-Mnemo-User-Id": user, "Content-Type": "application/json"}, content=big)
    chunked = post(
        mnemo,
        {"X-Mnemo-User-Id": user},
        content=iter([big[i : i + MIB] for i in range(0, len(big), MIB)]),
    )
    for response in (declared, chunked):
        assert response.status_code == 413, response.text[:200]
        assert response.json()["error"]["code"] == "request_too_large"
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == enqueued
    assert memories_of(mnemo, user) == []


def test_a_body_just_under_the_default_limit_is_answered(mnemo: MnemoThread) -> None:
    filler = "x" * (DEFAULT_LIMIT - 200)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": filler}]}).encode()
    assert len(body) < DEFAULT_LIMIT
    response = post(mnemo, {"Content-Type": "application/json"}, content=body)  # no user: memory off
    assert response.status_code == 200


INJECTION_HEADERS = {
    "crlf-in-user": {"X-Mnemo-User-Id": "alice%0d%0aX-Mnemo-Memory: off"},
    "newline-escape-in-agent": {"X-Mnemo-Agent-Id": "bot\\r\\nSet-Cookie: a=b"},
    "html-in-session": {"X-Mnemo-Session-Id": "<script>alert(1)</script>"},
    "path-in-user": {"X-Mnemo-User-Id": "../../etc/passwd"},
    "filter-syntax-in-user": {"X-Mnemo-User-Id": "alice' OR '1'='1"},
}


@pytest.mark.parametrize("headers", list(INJECTION_HEADERS.values()), ids=list(INJECTION_HEADERS))
def test_header_injection_attempts_are_a_400_that_leaves_no_trace(mnemo: MnemoThread, headers: dict[str, str]) -> None:
    enqueued = metric(mnemo, "mnemo_exchanges_enqueued_total")
    body = {"model": "m", "messages": [{"role": "user", "content": "I live in Lisbon"}]}
    response = post(mnemo, {"X-Mnemo-User-Id": new_user(), **headers}, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in {"x-mnemo-user-id", "x-mnemo-agent-id", "x-mnemo-session-id"}
    assert "set-cookie" not in response.headers and "x-mnemo-memory" not in response.headers
    assert metric(mnemo, "mnemo_exchanges_enqueued_total") == enqueued


def test_a_bare_cr_in_a_header_value_is_refused_by_the_http_parser(mnemo: MnemoThread) -> None:
    """A lone CR could split a header for a lenient proxy downstream; uvicorn's parser refuses it."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mnemo\r\nContent-Type: application/json\r\n"
        b"X-Mnemo-User-Id: bad\rvalue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", mnemo.settings.server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_empty_and_non_text_content_is_answered_and_not_remembered(mnemo: MnemoThread) -> None:
    user = new_user()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    for content in ["", "   ", [image], [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]]:
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        response = post(mnemo, {"X-Mnemo-User-Id": user}, json=body)
        assert response.status_code == 200, (content, response.text)
    assert memories_of(mnemo, user) == []


# --- fuzz ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
roles = st.one_of(st.sampled_from(["user", "assistant", "system", "developer", "tool", "function"]), json_values)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": json_values}),
    json_values,
)
contents = st.one_of(st.text(max_size=40), st.lists(parts, max_size=3), json_values)
messages = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"role": roles, "content": contents}),
            st.fixed_dictionaries({"role": roles}, optional={"content": contents, "name": json_values}),
            json_values,
        ),
        max_size=4,
    ),
    json_values,
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.one_of(st.sampled_from(["gpt-test", ""]), json_values), "messages": messages},
        optional={"stream": st.one_of(st.booleans(), json_values), "user": json_values, "temperature": json_values},
    ),
    json_values,
)


@pytest.fixture(scope="module")
def kept_alive(mnemo: MnemoThread) -> Iterator[httpx.Client]:
    """One connection for the fuzz's many requests (a new one each would be most of their time)."""
    with httpx.Client(base_url=mnemo.url, headers={"Authorization": "Bearer sk-client"}, timeout=30) as client:
        yield client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, with_user=st.booleans())
def test_no_chat_body_makes_the_gateway_answer_5xx(kept_alive: httpx.Client, body: Any, with_user: bool) -> None:
    headers = {"X-Mnemo-User-Id": "fuzz-user"} if with_user else {}
    response = kept_alive.post("/v1/chat/completions", headers=headers, content=json.dumps(body).encode())
    assert response.status_code < 500, (body, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
