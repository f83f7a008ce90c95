"""The Responses API and Anthropic's Messages API without a server: what Mnemo reads out of their
bodies and streams, where their memory block goes, the Anthropic headers and error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.datastructures import Headers

from gateway.anthropic import MESSAGES, MessagesReply, anthropic_headers, message_text
from gateway.errors import GatewayError, anthropic_error_body, upstream_status_error
from gateway.injection import append_block
from gateway.recall import skipped
from gateway.responses import RESPONSES_API, ResponsesReply, completed_text, input_messages
from gateway.streaming import MalformedStream, StreamRelay
from gateway.upstream import Route
from tests.support import api_replies

PIECES = ["Héllo", ", wörld", " 🙂 ", '"quoted"\n']
TEXT = "".join(PIECES)


def feed_split(reply: Any, stream: bytes, size: int) -> Any:
    for start in range(0, len(stream), size):
        reply.feed(stream[start : start + size])
    reply.close()
    return reply


# --- the Responses API ---------------------------------------------------------------------

RESPONSE_STREAM = b"".join(api_replies.responses_events({"model": "m"}, "resp_1", PIECES))


@pytest.mark.parametrize("size", [1, 3, 7, 64, len(RESPONSE_STREAM)])
def test_a_responses_stream_reads_the_same_reply_split_at_any_offset_and_completes_on_response_completed(
    size: int,
) -> None:
    reply = feed_split(ResponsesReply(), RESPONSE_STREAM, size)
    assert reply.text == TEXT and reply.complete


def test_a_responses_stream_without_response_completed_is_not_complete() -> None:
    events = api_replies.responses_events({"model": "m"}, "resp_1", PIECES)
    failed = api_replies.typed_event({"type": "response.failed", "response": {"status": "failed"}})
    for stream in (b"".join(events[:-1]), b"".join([*events[:-1], failed])):
        reply = feed_split(ResponsesReply(), stream, 5)
        assert reply.text == TEXT and not reply.complete


def test_a_responses_stream_with_a_line_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedStream):
        ResponsesReply().feed(b"event: response.created\ndata: {oops\n\n")


def test_the_responses_error_event_is_typed_nested_and_numbered_after_the_last_event() -> None:
    reply = feed_split(ResponsesReply(), b"".join(api_replies.responses_events({}, "resp_1", PIECES)[:3]), 9)
    event = reply.error_event(GatewayError(504, "upstream timed out", type="upstream_error", code="upstream_timeout"))
    head, data = event.decode().split("\n", 1)
    assert head == "event: error" and event.endswith(b"\n\n")
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "error",
        "error": {"message": "upstream timed out", "type": "upstream_error", "param": None, "code": "upstream_timeout"},
        "sequence_number": 3,
    }


def test_only_a_completed_response_has_a_reply_to_remember() -> None:
    body = {"model": "m"}
    assert completed_text(json.dumps(api_replies.response_object(body, "resp_1", TEXT)).encode()) == TEXT
    queued = api_replies.response_object(body, "resp_1", None, status="queued")  # background: true
    assert completed_text(json.dumps(queued).encode()) is None
    assert completed_text(b"not json") is None and completed_text(b"[]") is None


def test_responses_input_becomes_chat_messages_with_text_only() -> None:
    assert input_messages({"input": "hi"}) == [{"role": "user", "content": "hi"}]
    body = {
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "x"}],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
            {"type": "function_call_output", "call_id": "c", "output": "{}"},
            {"type": "item_reference", "id": "msg_1"},
            {"role": "developer", "content": "d"},
        ],
    }
    assert input_messages(body) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "developer", "content": "d"},
    ]


def test_the_memory_block_is_appended_to_instructions_and_nothing_else_changes() -> None:
    body = {"model": "m", "input": "hi", "instructions": "Be brief.", "previous_response_id": "resp_0"}
    assert RESPONSES_API.inject(body, "BLOCK") == {**body, "instructions": "Be brief.\n\nBLOCK"}
    assert RESPONSES_API.inject({"model": "m", "input": "hi"}, "BLOCK")["instructions"] == "BLOCK"


# --- Anthropic's Messages API --------------------------------------------------------------


def anthropic_stream(body: dict[str, Any]) -> bytes:
    return b"".join(api_replies.anthropic_events(body, PIECES))


@pytest.mark.parametrize("size", [1, 5, 64, 100_000])
def test_an_anthropic_stream_reads_text_blocks_only_and_completes_on_message_stop(size: int) -> None:
    body = {"thinking": {"type": "enabled"}, "tools": [{"name": "t"}]}
    reply = feed_split(MessagesReply(), anthropic_stream(body), size)
    assert reply.text == TEXT and reply.complete
    cut = anthropic_stream(body).rsplit(b"event: message_stop", 1)[0]
    assert not feed_split(MessagesReply(), cut, size).complete


def test_anthropic_text_blocks_are_joined_the_same_way_streamed_and_not() -> None:
    message = {"type": "message", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "a"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "b"}},
        {"type": "message_stop"},
    ]
    reply = feed_split(MessagesReply(), b"".join(api_replies.typed_event(e) for e in events), 4)
    assert reply.text == message_text(json.dumps(message).encode()) == "a\nb"
    assert message_text(b'{"type": "error"}') is None and message_text(b"nope") is None


def test_the_anthropic_error_event_is_an_error_event_in_anthropics_shape() -> None:
    event = MessagesReply().error_event(GatewayError(502, "upstream unreachable", type="upstream_error"))
    assert event == (
        b'event: error\ndata: {"type": "error", "error": {"type": "api_error", "message": "upstream unreachable"}}\n\n'
    )


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "invalid_request_error", "authentication_error"),
        (404, "invalid_request_error", "not_found_error"),
        (413, "invalid_request_error", "request_too_large"),
        (429, "upstream_error", "rate_limit_error"),
        (502, "upstream_error", "api_error"),
        (504, "upstream_error", "timeout_error"),
        (500, "server_error", "api_error"),
        (529, "overloaded_error", "overloaded_error"),
        (500, "overloaded_error", "overloaded_error"),  # the upstream's own type is kept
        (422, "whatever", "invalid_request_error"),
    ],
)
def test_errors_take_anthropics_types(status: int, kind: str, expected: str) -> None:
    body = anthropic_error_body(GatewayError(status, "msg", type=kind))
    assert body == {"type": "error", "error": {"type": expected, "message": "msg"}}


def test_an_anthropic_upstreams_error_keeps_its_type_and_message() -> None:
    error = upstream_status_error(529, api_replies.anthropic_error(529).encode())
    assert anthropic_error_body(error) == json.loads(api_replies.anthropic_error(529))


def route(key: str | None) -> Route:
    return Route("claude", "anthropic", "claude-x", None, key)


CLIENT = Headers(
    headers={
        "x-api-key": "sk-ant-client",
        "authorization": "Bearer sk-ant-oauth",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-05-16",
        "cookie": "session=1",
        "x-mnemo-user-id": "alice",
        "x-mnemo-api-key": "mnemo-key",
        "host": "evil.example",
    }
)


def test_a_configured_key_replaces_every_client_credential() -> None:
    headers = anthropic_headers(route("sk-ant-operator"), CLIENT)
    assert headers == {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-05-16",
        "x-api-key": "sk-ant-operator",
    }


def test_without_a_configured_key_the_clients_x_api_key_else_its_bearer_is_forwarded() -> None:
    assert anthropic_headers(route(None), CLIENT)["x-api-key"] == "sk-ant-client"
    assert "authorization" not in anthropic_headers(route(None), CLIENT)
    bearer = anthropic_headers(route(None), Headers(headers={"authorization": "Bearer sk-ant-oauth"}))
    assert bearer["authorization"] == "Bearer sk-ant-oauth" and "x-api-key" not in bearer
    assert bearer["anthropic-version"] == "2023-06-01"  # a client that sends none still gets answered


def test_anthropic_routes_post_to_the_host_roots_v1_messages_and_default_to_anthropics_api() -> None:
    assert MESSAGES.url(route(None)) == "https://api.anthropic.com/v1/messages"
    local = Route("claude", "anthropic", "claude-x", "http://127.0.0.1:9/", None)
    assert MESSAGES.url(local) == "http://127.0.0.1:9/v1/messages"


def test_system_text_gets_the_block_appended_as_a_string_or_a_last_text_block() -> None:
    cached = {"type": "text", "text": "You are a guide.", "cache_control": {"type": "ephemeral"}}
    assert append_block("Be brief.", "B") == "Be brief.\n\nB"
    assert append_block("", "B") == "B" and append_block(None, "B") == "B"
    assert append_block([cached], "B") == [cached, {"type": "text", "text": "B"}]


@pytest.mark.parametrize(
    ("failure", "status"),
    [("timeout", "skipped:timeout"), ("EmbedderError", "skipped:embedder_error"), ("StoreError", "skipped:store_error")]
    + [("StoreMismatchError", "skipped:store_error"), ("RuntimeError", "skipped:error")]
    + [("overloaded", "skipped:overloaded")],
)
def test_retrieval_failures_become_a_small_fixed_set_of_skip_reasons(failure: str, status: str) -> None:
    assert skipped(failure) == status


# --- the relay with another API's stream ----------------------------------------------------


class Upstream:
    def __init__(self, chunks: list[bytes], error: GatewayError | None = None) -> None:
        self.chunks, self.error, self.closed = chunks, error, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed += 1


async def test_the_relay_passes_a_responses_stream_through_and_records_its_output_text() -> None:
    chunks = api_replies.responses_events({"model": "m"}, "resp_1", PIECES)
    upstream, recorded = Upstream(chunks), []

    async def record(text: str) -> None:
        recorded.append(text)

    assert [piece async for piece in StreamRelay(upstream, record, ResponsesReply())] == chunks
    assert recorded == [TEXT] and upstream.closed == 1


async def test_an_anthropic_stream_that_fails_ends_with_an_anthropic_error_event_and_records_nothing() -> None:
    chunks = api_replies.anthropic_events({}, PIECES)[:4]
    upstream, recorded = Upstream(chunks, GatewayError(504, "upstream timed out", type="upstream_error")), []

    async def record(text: str) -> None:
        recorded.append(text)

    received = [piece async for piece in StreamRelay(upstream, record, MessagesReply())]
    assert received[:-1] == chunks and received[-1].startswith(b"event: error\n")
    assert json.loads(received[-1].split(b"data: ", 1)[1])["error"]["type"] == "timeout_error"
    assert recorded == [] and upstream.closed == 1
