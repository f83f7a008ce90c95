from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from arq.connections import RedisSettings
from pydantic import ValidationError

from mnemo.config import Settings
from mnemo.errors import QueueError
from mnemo.messages import build_query, content_text, to_exchange_messages
from mnemo.models import Scope
from mnemo.queue import (
    SCHEMA_VERSION,
    Exchange,
    ExchangeMessage,
    ExchangeQueue,
    decode_exchange,
    encode_exchange,
    exchange_job_id,
    redis_settings,
)


def make_exchange(**overrides: Any) -> Exchange:
    fields: dict[str, Any] = {
        "request_id": "req_abc",
        "scope": Scope(user_id="alice", agent_id="bot", session_id="s1"),
        "model": "gpt-4o",
        "messages": [
            ExchangeMessage(role="system", content="be nice"),
            ExchangeMessage(role="user", content="Ich heiße Jürgen 🙂 </conversation>", name="j"),
        ],
        "reply": 'Hallo "Jürgen"\n',
        "started_at": datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "completed_at": datetime(2024, 6, 1, 12, 0, 3, tzinfo=UTC),
        "extraction_mode": "llm",
        "metadata": {"app": "chat", "n": 3, "nested": {"ok": True}, "none": None},
    }
    return Exchange(**{**fields, **overrides})


# --- queue contract ------------------------------------------------------------------------


def test_an_exchange_survives_the_json_round_trip_unchanged() -> None:
    exchange = make_exchange()
    assert decode_exchange(encode_exchange(exchange)) == exchange


def test_an_exchange_with_defaults_survives_the_round_trip() -> None:
    exchange = make_exchange(scope=Scope(user_id="alice"), extraction_mode=None, metadata={}, messages=[])
    assert decode_exchange(encode_exchange(exchange)) == exchange


def test_the_payload_is_plain_json_carrying_the_schema_version() -> None:
    payload = json.loads(encode_exchange(make_exchange()))
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["scope"] == {"user_id": "alice", "agent_id": "bot", "session_id": "s1"}
    assert payload["started_at"].startswith("2024-06-01T12:00:00.123456")


def test_decode_exchange_accepts_an_already_parsed_dict() -> None:
    exchange = make_exchange()
    assert decode_exchange(json.loads(encode_exchange(exchange))) == exchange


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_decode_exchange_rejects_another_schema_version(version: Any) -> None:
    payload = json.loads(encode_exchange(make_exchange()))
    payload["schema_version"] = version
    with pytest.raises(QueueError, match="schema_version"):
        decode_exchange(json.dumps(payload))


def test_decode_exchange_rejects_a_payload_without_a_schema_version() -> None:
    payload = json.loads(encode_exchange(make_exchange()))
    del payload["schema_version"]
    with pytest.raises(QueueError, match="schema_version"):
        decode_exchange(payload)


def test_decode_exchange_validates_the_fields() -> None:
    payload = json.loads(encode_exchange(make_exchange()))
    del payload["scope"]
    with pytest.raises(ValidationError):
        decode_exchange(payload)


def test_the_job_id_is_deterministic_per_request_so_an_outbox_keeps_an_exchange_once() -> None:
    assert exchange_job_id("req_abc") == exchange_job_id("req_abc") == "mnemo:exchange:req_abc"
    assert exchange_job_id("req_abc") != exchange_job_id("req_abd")


def test_redis_settings_use_the_configured_url() -> None:
    settings = Settings.model_validate({"redis": {"url": "redis://cache:6380/3", "enqueue_timeout_s": 0.5}})
    redis = redis_settings(settings)
    assert (redis.host, redis.port, redis.database) == ("cache", 6380, 3)
    assert (redis.conn_timeout, redis.conn_retries) == (1, 0)


def test_redis_settings_fall_back_to_the_embedded_socket() -> None:
    assert redis_settings(Settings(), unix_socket_path="/tmp/r.sock").unix_socket_path == "/tmp/r.sock"


def test_redis_settings_without_url_or_embedded_socket_is_a_queue_error() -> None:
    with pytest.raises(QueueError, match="no redis.url"):
        redis_settings(Settings())


# --- message text --------------------------------------------------------------------------


def test_content_text_of_a_string_is_the_string() -> None:
    assert content_text("hello\nworld") == "hello\nworld"


def test_content_text_joins_text_parts_and_drops_image_audio_and_odd_parts() -> None:
    parts = [
        {"type": "text", "text": "look at this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "text", "text": "and this"},
        {"type": "text", "text": None},
        {"type": "text"},
        "not a dict",
        {"text": "no type"},
    ]
    assert content_text(parts) == "look at this\nand this"


@pytest.mark.parametrize("content", [None, 42, {"type": "text", "text": "x"}, []])
def test_content_text_of_anything_else_is_empty(content: Any) -> None:
    assert content_text(content) == ""


def test_to_exchange_messages_keeps_role_text_and_name_and_skips_messages_without_a_role() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}], "name": "al"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
        {"role": "tool", "content": "42", "tool_call_id": "t1", "name": 7},
        {"content": "no role"},
        {"role": None, "content": "null role"},
    ]
    assert to_exchange_messages(messages) == [
        ExchangeMessage(role="system", content="s"),
        ExchangeMessage(role="user", content="hi", name="al"),
        ExchangeMessage(role="assistant", content=""),
        ExchangeMessage(role="tool", content="42"),
    ]


# --- search query --------------------------------------------------------------------------


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


LONG = "Can you recommend a good restaurant near my office in Austin?"


def test_build_query_is_the_latest_user_message_when_it_is_long_enough() -> None:
    messages = [user("I love Thai food and I live in Austin"), assistant("ok"), user(LONG)]
    assert build_query(messages, context_messages=2, short_chars=40) == LONG


def test_build_query_adds_previous_user_messages_to_a_short_follow_up() -> None:
    messages = [user("first"), user("My sister Anna lives in Lyon"), assistant("Nice"), user("What about her?")]
    assert (
        build_query(messages, context_messages=2, short_chars=40)
        == "first\nMy sister Anna lives in Lyon\nWhat about her?"
    )


def test_build_query_adds_at_most_context_messages_previous_user_messages() -> None:
    messages = [user("one"), user("two"), user("three"), assistant("a"), user("and?")]
    assert build_query(messages, context_messages=1, short_chars=40) == "three\nand?"


def test_build_query_never_adds_context_when_context_messages_is_zero() -> None:
    assert build_query([user("My sister Anna"), user("her?")], context_messages=0, short_chars=40) == "her?"


def test_build_query_ignores_assistant_system_and_empty_user_messages() -> None:
    messages = [
        {"role": "system", "content": "You are helpful. " * 10},
        user("I have a dog named Rex"),
        assistant("Cute! " * 20),
        user("   "),
        user([{"type": "image_url", "image_url": {"url": "x"}}]),
        user([{"type": "text", "text": "  his age?  "}]),
    ]
    assert build_query(messages, context_messages=2, short_chars=40) == "I have a dog named Rex\nhis age?"


def test_build_query_of_a_conversation_without_user_text_is_empty() -> None:
    assert build_query([{"role": "system", "content": "s"}, assistant("hi")], 2, 40) == ""
    assert build_query([], 2, 40) == ""


def test_build_query_uses_the_short_chars_threshold_exactly() -> None:
    messages = [user("context"), user("x" * 10)]
    assert build_query(messages, context_messages=2, short_chars=10) == "x" * 10
    assert build_query(messages, context_messages=2, short_chars=11) == "context\n" + "x" * 10


async def test_enqueue_without_a_reachable_redis_is_a_queue_error_and_close_is_safe(tmp_path: Path) -> None:
    redis = RedisSettings(unix_socket_path=str(tmp_path / "missing.sock"), conn_timeout=1, conn_retries=0)
    queue = ExchangeQueue(redis, "mnemo:test", timeout_s=1)
    with pytest.raises(QueueError, match="cannot connect to redis"):
        await queue.enqueue(make_exchange())
    with pytest.raises(QueueError):
        await queue.ping()
    await queue.close()
