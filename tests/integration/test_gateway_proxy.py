"""The gateway as a proxy, driven by the real openai SDK: replies and streams come back as the
upstream sent them, unknown fields survive the round trip, and the X-Mnemo-* headers decide
whose memory is read and written."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

from mnemo.models import Scope
from tests.support.probes import (
    EAGER_MEMORY,
    LITELLM_READONLY_WARNING,
    Gateways,
    assert_no_trace,
    async_client,
    counts,
    enqueued,
    new_user,
    stored_texts,
    sync_client,
    user_message,
    wait_for_texts,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

pytestmark = LITELLM_READONLY_WARNING


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream) -> MnemoThread:
    return gateways.get(memory=EAGER_MEMORY)


def chat_requests(upstream: ScriptedUpstream) -> list[dict[str, Any]]:
    return [recorded.body for recorded in upstream.of_task("chat")]


def seed_memory(mnemo: MnemoThread, user: str, text: str) -> None:
    sync_client(mnemo, user, extraction="raw").chat.completions.create(model="gpt-test", messages=user_message(text))
    wait_for_texts(mnemo, user, [text])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sync_client_gets_the_scripted_reply(mnemo: MnemoThread, upstream: ScriptedUpstream, stream: bool) -> None:
    client = sync_client(mnemo, new_user())
    if stream:
        chunks = client.chat.completions.create(model="gpt-test", messages=user_message("hello there"), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = client.chat.completions.create(model="gpt-test", messages=user_message("hello there"))
        text = reply.choices[0].message.content or ""
        assert reply.choices[0].finish_reason == "stop" and reply.usage is not None
    assert text == "Echo: hello there"
    assert chat_requests(upstream)[0].get("stream", False) is stream


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_async_client_gets_the_scripted_reply(mnemo: MnemoThread, stream: bool) -> None:
    async with async_client(mnemo, new_user()) as client:
        if stream:
            chunks = await client.chat.completions.create(
                model="gpt-test", messages=user_message("hello async"), stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            reply = await client.chat.completions.create(model="gpt-test", messages=user_message("hello async"))
            text = reply.choices[0].message.content or ""
    assert text == "Echo: hello async"


def test_include_usage_delivers_the_usage_chunk_after_the_reply(mnemo: MnemoThread, upstream: ScriptedUpstream) -> None:
    chunks = list(
        sync_client(mnemo, new_user()).chat.completions.create(
            model="gpt-test",
            messages=user_message("count my tokens"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (10, 4, 14)
    assert chat_requests(upstream)[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_mnemo_headers_name_the_request_and_the_injected_memories(
    mnemo: MnemoThread, upstream: ScriptedUpstream, stream: bool
) -> None:
    user = new_user()
    seed_memory(mnemo, user, "I live in Austin")
    (memory,) = mnemo.call(lambda core: core.store.list(Scope(user_id=user)))
    raw = sync_client(mnemo, user).chat.completions.with_raw_response.create(
        model="gpt-test", messages=user_message("Which city do I live in?"), stream=stream
    )
    assert raw.status_code == 200
    assert raw.headers["x-mnemo-request-id"].startswith("req_")
    assert raw.headers["x-mnemo-request-id"] != memory.source_request_id
    assert raw.headers["x-mnemo-memories"] == "1"
    assert raw.headers["x-mnemo-memory-ids"] == memory.id
    if stream:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["cache-control"] == "no-cache" and raw.headers["x-accel-buffering"] == "no"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices).startswith("Echo:")
    else:
        assert raw.parse().choices[0].message.content == "Echo: Which city do I live in?"
    assert "I live in Austin" in upstream.of_task("chat")[-1].system_prompt


def test_a_memory_is_tagged_with_the_request_id_the_client_was_given(mnemo: MnemoThread) -> None:
    user = new_user()
    raw = sync_client(mnemo, user).chat.completions.with_raw_response.create(
        model="gpt-test", messages=user_message("I play the cello")
    )
    wait_for_texts(mnemo, user, ["I play the cello"])
    (memory,) = mnemo.call(lambda core: core.store.list(Scope(user_id=user)))
    assert memory.source_request_id == raw.headers["x-mnemo-request-id"]
    assert raw.headers["x-mnemo-memories"] == "0" and raw.headers["x-mnemo-memory-ids"] == ""


def test_without_a_user_id_the_request_is_proxied_with_memory_off(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    someone = new_user()
    seed_memory(mnemo, someone, "I live in Austin")
    upstream.requests.clear()
    before = counts(mnemo)
    raw = sync_client(mnemo).chat.completions.with_raw_response.create(
        model="gpt-test", messages=user_message("I live in Austin and I love jazz")
    )
    assert raw.parse().choices[0].message.content == "Echo: I live in Austin and I love jazz"
    assert raw.headers["x-mnemo-memories"] == "0" and raw.headers["x-mnemo-memory-ids"] == ""
    assert chat_requests(upstream)[0]["messages"] == user_message("I live in Austin and I love jazz")
    request_id = raw.headers["x-mnemo-request-id"]
    assert_no_trace(mnemo, upstream, redis_client, new_user(), before=before, request_id=request_id)
    assert stored_texts(mnemo, someone) == ["I live in Austin"]


@pytest.mark.parametrize(
    ("mode", "injects", "stores"),
    [("on", True, True), ("read", True, False), ("write", False, True), ("off", False, False), ("OFF", False, False)],
)
def test_memory_header_decides_what_is_injected_and_what_is_stored(
    mnemo: MnemoThread, upstream: ScriptedUpstream, mode: str, injects: bool, stores: bool
) -> None:
    user = new_user()
    seed_memory(mnemo, user, "I live in Austin")
    upstream.requests.clear()
    before = enqueued(mnemo)
    raw = sync_client(mnemo, user, memory=mode).chat.completions.with_raw_response.create(
        model="gpt-test", messages=user_message("I prefer green tea. Which city do I live in?")
    )
    assert raw.status_code == 200
    assert raw.headers["x-mnemo-memories"] == ("1" if injects else "0")
    assert ("I live in Austin" in str(chat_requests(upstream)[0]["messages"])) is injects
    if stores:
        wait_for_texts(mnemo, user, ["I live in Austin", "I prefer green tea"])
    else:
        assert enqueued(mnemo) == before
        assert stored_texts(mnemo, user) == ["I live in Austin"]


def test_body_user_field_is_the_fallback_user_id_and_the_header_wins(mnemo: MnemoThread) -> None:
    carol, dave = new_user("carol"), new_user("dave")
    sync_client(mnemo).chat.completions.create(model="gpt-test", messages=user_message("I collect stamps"), user=carol)
    wait_for_texts(mnemo, carol, ["I collect stamps"])
    sync_client(mnemo, dave).chat.completions.create(
        model="gpt-test", messages=user_message("I collect coins"), user=carol
    )
    wait_for_texts(mnemo, dave, ["I collect coins"])
    assert stored_texts(mnemo, carol) == ["I collect stamps"]


def test_configured_key_replaces_the_client_bearer(mnemo: MnemoThread, upstream: ScriptedUpstream) -> None:
    stream = sync_client(mnemo, new_user(), api_key="sk-client-secret").chat.completions.create(
        model="gpt-test", messages=user_message("hi"), stream=True
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "stop"
    assert upstream.of_task("chat")[0].headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_cookie_set_by_the_upstream_is_never_sent_with_another_request(
    mnemo: MnemoThread, upstream: ScriptedUpstream, stream: bool
) -> None:
    """One HTTP client serves every user: a cookie it kept from one user's reply (a session of an
    auth proxy in front of the model, say) would go out with the next user's request."""
    upstream.set_cookie = "session=alice-only; Path=/"
    for user in (new_user(), new_user()):
        reply = sync_client(mnemo, user).chat.completions.create(
            model="gpt-test", messages=user_message("hi"), stream=stream
        )
        if stream:
            list(reply)
    first, second = upstream.of_task("chat")
    assert "cookie" not in first.headers and "cookie" not in second.headers


# --- Mnemos with their own model table (kept last: each one restarts Mnemo) -----------------


def test_unknown_and_extra_fields_reach_the_upstream_untouched_and_the_model_is_routed(
    gateways: Gateways, upstream: ScriptedUpstream
) -> None:
    upstream_url = gateways.upstream_url
    models = [
        {"name": "house-model", "provider": "openai", "model": "provider-model", "base_url": upstream_url},
        {"name": "*", "provider": "openai", "base_url": upstream_url, "api_key": "k"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    text = "what is the weather in Lisboa, café naïve 🎉?"
    future = {"x": [1, 2], "big": 2**64 + 1, "tiny": 1e-7}
    client = sync_client(gateways.get(models=models), new_user())
    client.chat.completions.create(
        model="house-model",
        messages=user_message(text),
        temperature=0.3,
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        response_format={"type": "json_object"},
        seed=7,
        extra_body={"future_field": future, "metadata_v9": None},
    )
    client.chat.completions.create(model="any-other-model", messages=user_message("hi"))
    routed, fallback = chat_requests(upstream)
    assert routed["model"] == "provider-model" and fallback["model"] == "any-other-model"
    assert routed["future_field"] == future and routed["metadata_v9"] is None
    assert routed["temperature"] == 0.3 and routed["seed"] == 7 and routed["tool_choice"] == "auto"
    assert routed["tools"] == tools and routed["response_format"] == {"type": "json_object"}
    assert routed["messages"] == user_message(text)


def test_models_health_and_readiness(gateways: Gateways) -> None:
    upstream_url = gateways.upstream_url
    models = [
        {"name": "alpha", "provider": "openai", "base_url": upstream_url},
        {"name": "beta", "provider": "openai", "model": "b-1", "base_url": upstream_url},
        {"name": "*", "provider": "openai", "base_url": upstream_url},
    ]
    mnemo = gateways.get(models=models)
    listed = sync_client(mnemo).models.list()
    health = httpx.get(mnemo.url + "/healthz")
    ready = httpx.get(mnemo.url + "/readyz")
    assert sorted(model.id for model in listed.data) == ["alpha", "beta"]
    assert {model.object for model in listed.data} == {"model"}
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert {"store", "queue"} <= set(ready.json()["checks"])
    assert set(ready.json()["checks"].values()) == {"ok"}


def test_client_bearer_is_forwarded_when_the_route_has_no_key(gateways: Gateways, upstream: ScriptedUpstream) -> None:
    mnemo = gateways.get(models=[{"name": "*", "provider": "openai", "base_url": gateways.upstream_url}])
    client = openai.OpenAI(
        base_url=mnemo.url + "/v1",
        api_key="sk-the-clients-own",
        organization="org-42",
        default_headers={"X-Mnemo-User-Id": new_user(), "Cookie": "session=secret"},
        max_retries=0,
    )
    client.chat.completions.create(model="gpt-test", messages=user_message("hi"))
    headers = upstream.of_task("chat")[0].headers
    assert headers["authorization"] == "Bearer sk-the-clients-own"
    assert headers["openai-organization"] == "org-42"
    assert "cookie" not in headers and not any(name.startswith("x-mnemo") for name in headers)
