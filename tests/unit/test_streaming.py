from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest

from gateway.errors import GatewayError
from gateway.streaming import MalformedStream, SSEReply, StreamRelay, error_event


def chunk(content: str | None = None, finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def sse(*events: dict[str, Any] | str, newline: bytes = b"\n") -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
        out += b"data: " + data.encode() + newline + newline
    return out


REPLY_PARTS = ["Héllo", ", wörld", " 🙂 ", "日本", '\n"quoted"', " end"]
REALISTIC_STREAM = (
    b": keep-alive comment\n\n"
    + b"event: message\nid: 1\nretry: 1000\n"
    + sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    + b"".join(sse(chunk(part)) for part in REPLY_PARTS)
    + sse(chunk(None, finish="stop"))
    + sse({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}})
    + b"data: [DONE]\n\n"
)
REPLY_TEXT = "".join(REPLY_PARTS)


def parse(*chunks: bytes) -> SSEReply:
    reply = SSEReply()
    for piece in chunks:
        reply.feed(piece)
    return reply


# --- SSEReply ------------------------------------------------------------------------------


def test_sse_reply_accumulates_content_of_a_whole_stream_fed_at_once() -> None:
    reply = parse(REALISTIC_STREAM)
    assert reply.text == REPLY_TEXT
    assert reply.done
    assert reply.finish_reason == "stop"
    assert reply.complete


def test_sse_reply_text_is_the_same_when_the_stream_is_split_at_any_byte_offset() -> None:
    for offset in range(1, len(REALISTIC_STREAM)):
        reply = parse(REALISTIC_STREAM[:offset], REALISTIC_STREAM[offset:])
        assert (reply.text, reply.done, reply.finish_reason) == (REPLY_TEXT, True, "stop"), f"split at {offset}"


def test_sse_reply_handles_a_stream_fed_one_byte_at_a_time_including_mid_utf8() -> None:
    reply = parse(*(REALISTIC_STREAM[i : i + 1] for i in range(len(REALISTIC_STREAM))))
    assert reply.text == REPLY_TEXT
    assert reply.complete


def test_sse_reply_handles_crlf_line_endings() -> None:
    stream = sse(chunk("a"), chunk("b", finish="stop"), "[DONE]", newline=b"\r\n")
    reply = parse(stream)
    assert reply.text == "ab"
    assert reply.done


def test_sse_reply_accepts_data_lines_without_a_space_after_the_colon() -> None:
    reply = parse(b"data:" + json.dumps(chunk("x")).encode() + b"\n\ndata:[DONE]\n\n")
    assert reply.text == "x"
    assert reply.done


def test_sse_reply_ignores_comments_event_id_and_retry_lines() -> None:
    reply = parse(b": ping\nevent: delta\nid: 42\nretry: 10\n\n" + sse(chunk("hi")))
    assert reply.text == "hi"
    assert not reply.complete


def test_sse_reply_is_complete_with_finish_reason_even_without_done() -> None:
    reply = parse(sse(chunk("hi"), chunk(None, finish="length")))
    assert reply.complete
    assert not reply.done
    assert reply.finish_reason == "length"


def test_sse_reply_is_complete_with_done_even_without_finish_reason() -> None:
    reply = parse(sse(chunk("hi"), "[DONE]"))
    assert reply.complete
    assert reply.finish_reason is None


def test_sse_reply_is_incomplete_when_the_stream_is_cut() -> None:
    reply = parse(sse(chunk("partial")))
    assert reply.text == "partial"
    assert not reply.complete


def test_sse_reply_accepts_usage_only_chunks_with_empty_choices() -> None:
    reply = parse(sse(chunk("a"), {"choices": [], "usage": {"total_tokens": 5}}, {"usage": {"total_tokens": 5}}))
    assert reply.text == "a"


def test_sse_reply_ignores_choices_other_than_index_zero() -> None:
    event = {
        "choices": [
            {"index": 1, "delta": {"content": "other"}, "finish_reason": "stop"},
            {"index": 0, "delta": {"content": "mine"}, "finish_reason": None},
        ]
    }
    reply = parse(sse(event, chunk("!", index=2)))
    assert reply.text == "mine"
    assert reply.finish_reason is None


def test_sse_reply_treats_a_choice_without_index_as_choice_zero() -> None:
    reply = parse(sse({"choices": [{"delta": {"content": "x"}}]}))
    assert reply.text == "x"


def test_sse_reply_ignores_non_string_content_and_odd_choice_shapes() -> None:
    events: list[dict[str, Any] | str] = [
        {"choices": [{"index": 0, "delta": {"content": None, "tool_calls": [{"id": "t"}]}}]},
        {"choices": [{"index": 0, "delta": {"content": 5}}]},
        {"choices": ["not a dict", {"index": 0, "delta": "nope"}]},
        {"choices": {"index": 0}},
        {"choices": None},
    ]
    reply = parse(sse(*events, chunk("ok")))
    assert reply.text == "ok"


@pytest.mark.parametrize("line", [b"data: not json\n", b"data: {truncated\n", b"data: \n"])
def test_sse_reply_raises_malformed_stream_on_a_non_json_data_line(line: bytes) -> None:
    with pytest.raises(MalformedStream) as caught:
        parse(sse(chunk("a")) + line)
    assert caught.value.status == 502
    assert caught.value.code == "bad_stream"


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_sse_reply_raises_malformed_stream_on_json_that_is_not_an_object(data: bytes) -> None:
    with pytest.raises(MalformedStream):
        parse(b"data: " + data + b"\n")


def test_sse_reply_raises_malformed_stream_on_an_error_object() -> None:
    with pytest.raises(MalformedStream, match="error mid-stream"):
        parse(sse(chunk("a"), {"error": {"message": "overloaded", "type": "server_error"}}))


# --- StreamRelay ---------------------------------------------------------------------------


class FakeUpstream:
    def __init__(self, chunks: list[bytes], error: GatewayError | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            yield piece
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed += 1


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, text: str) -> None:
        self.calls.append(text)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def drain(relay: StreamRelay) -> list[bytes]:
    return [piece async for piece in relay]


async def test_relay_passes_chunks_through_unchanged_and_records_the_full_reply_once() -> None:
    chunks = split(REALISTIC_STREAM, 7)
    upstream, record = FakeUpstream(chunks), Recorder()
    relay = StreamRelay(upstream, record)
    assert await drain(relay) == chunks
    assert record.calls == [REPLY_TEXT]
    assert upstream.closed == 1
    assert relay.delivered


async def test_relay_records_a_reply_that_finished_without_done() -> None:
    upstream, record = FakeUpstream([sse(chunk("hi"), chunk(None, finish="stop"))]), Recorder()
    await drain(StreamRelay(upstream, record))
    assert record.calls == ["hi"]


async def test_relay_does_not_record_a_stream_that_ends_without_done_or_finish_reason() -> None:
    upstream, record = FakeUpstream([sse(chunk("half a"), chunk(" reply"))]), Recorder()
    relay = StreamRelay(upstream, record)
    assert await drain(relay) == upstream.chunks
    assert record.calls == []
    assert upstream.closed == 1
    assert not relay.delivered


async def test_relay_turns_an_upstream_failure_into_an_openai_shaped_error_event() -> None:
    failure = GatewayError(504, "upstream timed out", type="upstream_error", code="upstream_timeout")
    upstream, record = FakeUpstream([sse(chunk("hi"))], error=failure), Recorder()
    received = await drain(StreamRelay(upstream, record))
    assert received[:-1] == upstream.chunks
    last = received[-1]
    assert last.startswith(b"data: ") and last.endswith(b"\n\n")
    assert json.loads(last[6:]) == {
        "error": {"message": "upstream timed out", "type": "upstream_error", "param": None, "code": "upstream_timeout"}
    }
    assert record.calls == []
    assert upstream.closed == 1


async def test_relay_reports_a_malformed_upstream_stream_as_an_error_event_and_records_nothing() -> None:
    upstream, record = FakeUpstream([sse(chunk("hi")), b"data: garbage\n\n", sse(chunk(None, "stop"))]), Recorder()
    received = await drain(StreamRelay(upstream, record))
    assert json.loads(received[-1][6:])["error"]["code"] == "bad_stream"
    assert b"garbage" not in b"".join(received)
    assert record.calls == []
    assert upstream.closed == 1


async def test_relay_closes_upstream_and_records_nothing_when_the_consumer_stops_early() -> None:
    upstream, record = FakeUpstream(split(REALISTIC_STREAM, 20)), Recorder()
    relay = StreamRelay(upstream, record)
    iterator = cast(AsyncGenerator[bytes, None], relay.__aiter__())  # the relay is an async generator
    first = await iterator.__anext__()
    assert first == upstream.chunks[0]
    await iterator.aclose()
    assert upstream.closed == 1
    assert record.calls == []
    assert not relay.delivered


async def test_relay_does_not_record_when_the_consumer_stops_after_the_last_chunk_but_before_the_end() -> None:
    upstream, record = FakeUpstream([REALISTIC_STREAM]), Recorder()
    iterator = cast(AsyncGenerator[bytes, None], StreamRelay(upstream, record).__aiter__())
    await iterator.__anext__()
    await iterator.aclose()
    assert upstream.closed == 1
    assert record.calls == []


@pytest.mark.parametrize("case", ["read-to-the-end", "stopped-early", "failed"])
async def test_relay_ends_once_after_its_record_step_whether_it_recorded_a_stream_stopped_or_failed(case: str) -> None:
    """``on_end`` (the gateway's chat-lifecycle count, the signal tests wait for before checking
    that nothing was recorded) comes last: after the record step, or after deciding to skip it."""
    failure = GatewayError(502, "cut", type="upstream_error", code="upstream_unreachable")
    if case == "failed":
        upstream = FakeUpstream([sse(chunk("hi"))], error=failure)
    else:
        upstream = FakeUpstream(split(REALISTIC_STREAM, 20))
    events: list[str] = []

    async def record(text: str) -> None:
        events.append("record")

    relay = StreamRelay(upstream, record, on_end=lambda: events.append("end"))
    iterator = cast(AsyncGenerator[bytes, None], relay.__aiter__())
    await iterator.__anext__()
    if case == "stopped-early":
        await iterator.aclose()
    else:
        _ = [piece async for piece in iterator]
    assert relay.delivered is (case == "read-to-the-end")
    assert events == (["record", "end"] if relay.delivered else ["end"])


def test_error_event_is_one_sse_data_event_with_the_openai_error_body() -> None:
    event = error_event(GatewayError(502, "boom", type="upstream_error", param="x", code="c"))
    assert event == b'data: {"error": {"message": "boom", "type": "upstream_error", "param": "x", "code": "c"}}\n\n'
