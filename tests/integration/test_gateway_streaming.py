"""Streaming through a real gateway on 127.0.0.1, read as raw SSE with httpx: chunks arrive as
the upstream sends them, a client that leaves mid-stream closes the upstream stream and
records nothing, and a stream read to the end is recorded."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis as redis_sync

from tests.conftest import wait_until
from tests.support.probes import (
    LITELLM_READONLY_WARNING,
    Gateways,
    assert_no_trace,
    counts,
    new_user,
    recorded_exchange,
    user_message,
    wait_for_texts,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

pytestmark = LITELLM_READONLY_WARNING


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream) -> MnemoThread:
    return gateways.get()


def stream_request(mnemo: MnemoThread, client: httpx.Client, user: str, text: str) -> Any:
    return client.stream(
        "POST",
        mnemo.url + "/v1/chat/completions",
        json={"model": "gpt-test", "messages": user_message(text), "stream": True},
        headers={"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-client"},
    )


def content_of(line: str) -> str | None:
    if not line.startswith("data: {"):
        return None
    choices = json.loads(line[6:]).get("choices") or [{}]
    content = choices[0].get("delta", {}).get("content")
    return content if isinstance(content, str) else None


def test_chunks_reach_the_client_while_the_upstream_is_still_generating(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    # The upstream sends its first chunk, then holds the rest until the client has read that one:
    # a gateway that buffered the stream would deliver nothing (and the read would time out).
    upstream.chunks, upstream.hold_at_chunk = 4, 1
    with httpx.Client(timeout=10) as client, stream_request(mnemo, client, new_user(), "I sing in a choir") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = reply.iter_lines()
        first = next(text for line in lines if (text := content_of(line)) is not None)
        assert upstream.open_streams == 1
        upstream.release.set()
        rest = [line for line in lines if line]
    contents = [first, *(text for line in rest if (text := content_of(line)) is not None)]
    assert "".join(contents) == "Echo: I sing in a choir"
    assert len(contents) == 4 and rest[-1] == "data: [DONE]"


def test_a_client_that_disconnects_mid_stream_closes_the_upstream_and_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.chunks, upstream.hold_at_chunk = 4, 1  # the rest of the reply never comes
    user, before = new_user(), counts(mnemo)
    with httpx.Client(timeout=10) as client:
        with stream_request(mnemo, client, user, "I live in Porto and I surf") as reply:
            request_id = reply.headers["x-mnemo-request-id"]
            lines = reply.iter_lines()  # held: a dropped line iterator closes the connection at once
            first = next(line for line in lines if content_of(line))
            assert upstream.open_streams == 1
        # Leaving the block closes the response: the connection goes away mid-body.
    assert content_of(first) is not None
    wait_until(lambda: upstream.open_streams == 0, timeout=5)
    assert_no_trace(mnemo, upstream, redis_client, user, before=before, request_id=request_id)


def test_a_client_that_disconnects_before_the_first_chunk_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.hold_at_chunk = 0  # the upstream sends nothing until the client has gone
    user, before = new_user(), counts(mnemo)
    with httpx.Client(timeout=10) as client:
        with stream_request(mnemo, client, user, "I live in Porto") as reply:
            request_id = reply.headers["x-mnemo-request-id"]
            wait_until(lambda: upstream.open_streams == 1, timeout=5)
    wait_until(lambda: upstream.open_streams == 0, timeout=5)
    assert_no_trace(mnemo, upstream, redis_client, user, before=before, request_id=request_id)


def test_a_stream_read_to_the_end_is_recorded_with_the_whole_reply(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    upstream.chunks, upstream.chunk_delay_s = 4, 0.05
    user = new_user()
    with httpx.Client(timeout=10) as client, stream_request(mnemo, client, user, "I live in Porto") as reply:
        request_id = reply.headers["x-mnemo-request-id"]
        body = reply.read().decode()
    assert body.rstrip().endswith("data: [DONE]")
    wait_for_texts(mnemo, user, ["I live in Porto"])
    exchange = recorded_exchange(redis_client, request_id)
    assert exchange.reply == "Echo: I live in Porto"
    assert [(m.role, m.content) for m in exchange.messages] == [("user", "I live in Porto")]
    assert upstream.open_streams == 0
