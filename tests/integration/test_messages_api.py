"""POST /v1/messages with the anthropic SDK: the last user turn is searched and remembered,
memories go into ``system``, Anthropic's JSON and SSE events arrive as the upstream sent them
(tool use, images and thinking included), the route's key handling matches Chat Completions',
and every error on the path is in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
import redis as redis_sync

from tests.support.probes import (
    EAGER_MEMORY,
    Gateways,
    assert_no_trace,
    counts,
    headers_for,
    new_user,
    recorded_exchange,
    stored_texts,
    wait_for_texts,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import Failure, ScriptedUpstream

OPERATOR_KEY = "sk-ant-operator"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
TOOLS: Any = [{"name": "find_vet", "description": "Find a vet", "input_schema": {"type": "object", "properties": {}}}]


def claude_routes(gateways: Gateways) -> list[dict[str, Any]]:
    root = gateways.upstream_url.removesuffix("/v1")  # Anthropic's base URL is the host root
    return [
        {"name": "claude-test", "provider": "anthropic", "base_url": root, "api_key": OPERATOR_KEY},
        {"name": "claude-own-key", "provider": "anthropic", "base_url": root},
        {"name": "*", "provider": "openai", "base_url": gateways.upstream_url, "api_key": "sk-test"},
    ]


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream) -> MnemoThread:
    return gateways.get(memory=EAGER_MEMORY, extraction={"mode": "raw"}, models=claude_routes(gateways))


def claude(mnemo: MnemoThread, user: str | None, **headers: str) -> anthropic.Anthropic:
    # Anthropic's SDKs take the host root and post to /v1/messages themselves.
    return anthropic.Anthropic(
        base_url=mnemo.url, api_key="sk-ant-client", default_headers=headers_for(user) | headers, max_retries=0
    )


def create(mnemo: MnemoThread, user: str | None, content: Any, **fields: Any) -> Any:
    client = claude(mnemo, user)
    return client.messages.with_raw_response.create(
        model=fields.pop("model", "claude-test"),
        max_tokens=256,
        messages=[{"role": "user", "content": content}],
        **fields,
    )


def test_a_message_is_remembered_and_a_later_stream_gets_it_in_system_with_the_events_unchanged(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    nora = new_user("nora")
    first = create(mnemo, nora, "I keep bees")
    assert first.parse().content[0].text == "Echo: I keep bees"
    assert first.headers["x-mnemo-memory-status"] == "ok" and first.headers["x-mnemo-memories"] == "0"
    assert "system" not in upstream.requests[-1].body
    wait_for_texts(mnemo, nora, ["I keep bees"])

    question = "What do I keep?"
    with claude(mnemo, nora).messages.stream(
        model="claude-test", max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": question}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-mnemo-request-id"]
        assert stream.response.headers["x-mnemo-memories"] == "1"
    assert "".join(pieces) == f"Echo: {question}" and len(pieces) == 4
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"

    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages" and sent.body["stream"] is True
    assert sent.body["system"].startswith("Be brief.\n\n") and '"I keep bees"' in sent.body["system"]
    exchange = recorded_exchange(redis_client, request_id)
    assert [(m.role, m.content) for m in exchange.messages] == [("system", "Be brief."), ("user", question)]
    assert exchange.reply == f"Echo: {question}"


def test_system_blocks_keep_their_cache_control_and_get_the_memories_as_a_last_text_block(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    olga = new_user("olga")
    create(mnemo, olga, "I live in Riga")
    wait_for_texts(mnemo, olga, ["I live in Riga"])
    system: Any = [{"type": "text", "text": "You are a guide.", "cache_control": {"type": "ephemeral"}}]
    create(mnemo, olga, "Where do I live?", system=system)
    sent = upstream.requests[-1].body["system"]
    assert sent[0] == system[0] and len(sent) == 2
    assert sent[1]["type"] == "text" and '"I live in Riga"' in sent[1]["text"]


def test_another_user_sees_nothing_and_metadata_user_id_names_the_user_without_the_header(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    pia, quinn = new_user("pia"), new_user("quinn")
    create(mnemo, None, "I collect stamps", metadata={"user_id": pia})
    wait_for_texts(mnemo, pia, ["I collect stamps"])

    other = create(mnemo, quinn, "What do I collect?")
    assert other.headers["x-mnemo-memories"] == "0" and "system" not in upstream.requests[-1].body
    same = create(mnemo, None, "What do I collect?", metadata={"user_id": pia})
    assert same.headers["x-mnemo-memories"] == "1" and "I collect stamps" in upstream.requests[-1].body["system"]
    assert upstream.requests[-1].body["metadata"] == {"user_id": pia}


def test_tool_use_images_and_thinking_pass_through_both_ways_and_only_text_is_remembered(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    rae = new_user("rae")
    content = [{"type": "text", "text": "My dog is called Pixel"}, IMAGE]
    messages: Any = [{"role": "user", "content": content}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with claude(mnemo, rae).messages.stream(
        model="claude-test",
        max_tokens=2048,
        messages=messages,
        tools=TOOLS,
        thinking=thinking,
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-mnemo-request-id"]
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "sig-scripted"  # type: ignore[union-attr]
    assert final.content[2].input == {"query": "Echo: My dog is called Pixel"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    sent = upstream.requests[-1].body
    assert sent["messages"][0]["content"] == content and sent["tools"] == TOOLS and sent["thinking"] == thinking
    exchange = recorded_exchange(redis_client, request_id)
    assert [(m.role, m.content) for m in exchange.messages] == [("user", "My dog is called Pixel")]
    assert exchange.reply == "Echo: My dog is called Pixel"
    wait_for_texts(mnemo, rae, ["My dog is called Pixel"])
    assert "base64" not in json.dumps(stored_texts(mnemo, rae))


def test_a_configured_key_replaces_the_clients_and_without_one_the_clients_goes_to_the_configured_host(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    beta = {"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01"}
    claude(mnemo, "sam", **beta).messages.create(
        model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    configured = upstream.requests[-1].headers
    assert configured["x-api-key"] == OPERATOR_KEY and "authorization" not in configured
    assert {name: configured[name] for name in beta} == beta
    assert not any(name.startswith("x-mnemo-") for name in configured)

    # anthropic 2.x sends its api_key as an Authorization bearer; older SDKs and curl use x-api-key.
    claude(mnemo, "sam").messages.create(
        model="claude-own-key", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert client_credential(upstream.requests[-1].headers) == "sk-ant-client"
    assert upstream.requests[-1].body["model"] == "claude-own-key"
    body = {"model": "claude-own-key", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert post(mnemo, json.dumps(body).encode(), **{"x-api-key": "sk-ant-curl"}).status_code == 200
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-curl"
    assert upstream.requests[-1].headers["anthropic-version"] == "2023-06-01"  # Mnemo's default when none is sent


def client_credential(headers: dict[str, str]) -> str | None:
    """The client's own Anthropic credential as it reached the upstream, whichever header carried it."""
    assert not ("x-api-key" in headers and "authorization" in headers), headers
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ") or None


def anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


def post(mnemo: MnemoThread, content: bytes, **headers: str) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    return httpx.post(mnemo.url + "/v1/messages", content=content, headers=headers, timeout=10)


def test_bad_input_unknown_providers_and_upstream_errors_are_answered_in_anthropics_shape(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    bad_json = post(mnemo, b'{"model": ')
    assert bad_json.status_code == 400 and anthropic_error(bad_json)["type"] == "invalid_request_error"
    too_large = post(mnemo, b" " * (mnemo.settings.server.max_body_bytes + 1))
    assert too_large.status_code == 413 and anthropic_error(too_large)["type"] == "request_too_large"
    no_messages = post(mnemo, json.dumps({"model": "claude-test", "max_tokens": 5}).encode())
    assert no_messages.status_code == 400 and "`messages`" in anthropic_error(no_messages)["message"]
    wrong_provider = post(
        mnemo, json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}).encode()
    )
    assert wrong_provider.status_code == 400 and "provider `openai`" in anthropic_error(wrong_provider)["message"]
    assert upstream.requests == []

    upstream.failures.append(Failure(status=529))
    with pytest.raises(anthropic.APIStatusError) as caught:
        create(mnemo, "tess", "hello")
    assert caught.value.status_code == 529
    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "scripted 529"}}


def test_a_stream_cut_by_the_upstream_ends_with_an_anthropic_error_event_and_records_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    uma = new_user("uma")
    before = counts(mnemo)
    upstream.failures.append(Failure(cut_after_chunks=5))
    body = {
        "model": "claude-test",
        "max_tokens": 9,
        "stream": True,
        "messages": [{"role": "user", "content": "I am tall"}],
    }
    with httpx.stream("POST", mnemo.url + "/v1/messages", json=body, headers=headers_for(uma), timeout=10) as response:
        text = response.read().decode()
    assert response.status_code == 200 and "message_stop" not in text
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIError):
        upstream.failures.append(Failure(cut_after_chunks=5))
        with claude(mnemo, uma).messages.stream(
            model="claude-test", max_tokens=9, messages=[{"role": "user", "content": "I am tall"}]
        ) as stream:
            stream.get_final_message()
    assert_no_trace(mnemo, upstream, redis_client, uma, before=before, requests=2)


def test_an_unknown_model_is_a_404_in_anthropics_shape(gateways: Gateways, upstream: ScriptedUpstream) -> None:
    mnemo = gateways.get(memory=EAGER_MEMORY, extraction={"mode": "raw"}, models=claude_routes(gateways)[:1])
    response = post(
        mnemo, json.dumps({"model": "claude-nope", "messages": [{"role": "user", "content": "x"}]}).encode()
    )
    assert response.status_code == 404 and anthropic_error(response)["type"] == "not_found_error"


MNEMO_KEY = "mnemo-admin-key-for-messages"


def test_with_mnemo_keys_an_anthropic_client_sends_its_mnemo_key_in_x_mnemo_api_key_never_as_x_api_key(
    gateways: Gateways, upstream: ScriptedUpstream
) -> None:
    mnemo = gateways.get(
        memory=EAGER_MEMORY,
        extraction={"mode": "raw"},
        models=claude_routes(gateways),
        auth={"admin_keys": [MNEMO_KEY]},
    )
    missing = post(mnemo, b"{}")
    assert missing.status_code == 401 and anthropic_error(missing)["type"] == "authentication_error"
    assert "X-Mnemo-Api-Key" in anthropic_error(missing)["message"]
    as_upstream_key = post(mnemo, b"{}", **{"x-api-key": MNEMO_KEY, "authorization": f"Bearer {MNEMO_KEY}"})
    assert as_upstream_key.status_code == 401 and anthropic_error(as_upstream_key)["type"] == "authentication_error"
    assert upstream.requests == []

    reply = claude(mnemo, "vera", **{"X-Mnemo-Api-Key": MNEMO_KEY}).messages.create(
        model="claude-own-key", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content[0].text == "Echo: hi"  # type: ignore[union-attr]
    forwarded = upstream.requests[-1].headers
    assert client_credential(forwarded) == "sk-ant-client" and MNEMO_KEY not in json.dumps(forwarded)
