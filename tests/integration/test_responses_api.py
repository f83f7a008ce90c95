"""POST /v1/responses with the openai SDK: the user's input is searched and remembered, memories
go into ``instructions``, the reply (JSON or typed SSE events) arrives as the upstream sent it,
every other field passes through, and memory is shared with Chat Completions."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

from tests.support.api_replies import SCRIPTED_RESPONSE_EVENT_TYPES
from tests.support.probes import (
    EAGER_MEMORY,
    Gateways,
    assert_no_trace,
    counts,
    new_user,
    recorded_exchange,
    sync_client,
    user_message,
    wait_for_texts,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import Failure, ScriptedUpstream


@pytest.fixture
def mnemo(gateways: Gateways, upstream: ScriptedUpstream) -> MnemoThread:
    root = gateways.upstream_url.removesuffix("/v1")
    models = [
        {"name": "claude-test", "provider": "anthropic", "base_url": root, "api_key": "sk-ant-operator"},
        {"name": "*", "provider": "openai", "base_url": gateways.upstream_url, "api_key": "sk-test"},
    ]
    return gateways.get(memory=EAGER_MEMORY, extraction={"mode": "raw"}, models=models)


def test_a_response_remembers_its_input_and_a_later_stream_gets_it_in_instructions_unchanged(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    ines = new_user("ines")
    first = sync_client(mnemo, ines).responses.with_raw_response.create(model="gpt-test", input="I keep bees")
    assert first.parse().output_text == "Echo: I keep bees"
    assert first.headers["x-mnemo-memories"] == "0" and first.headers["x-mnemo-memory-status"] == "ok"
    wait_for_texts(mnemo, ines, ["I keep bees"])

    question = "What do I keep?"
    raw = sync_client(mnemo, ines).responses.with_raw_response.create(
        model="gpt-test", input=question, instructions="Be brief.", stream=True
    )
    events = list(raw.parse())
    assert [event.type for event in events] == SCRIPTED_RESPONSE_EVENT_TYPES
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == f"Echo: {question}" and len(deltas) == 4
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.output_text == f"Echo: {question}"
    assert raw.headers["x-mnemo-memories"] == "1" and raw.headers["content-type"].startswith("text/event-stream")

    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses" and sent.body["input"] == question
    instructions = sent.body["instructions"]
    assert instructions.startswith("Be brief.\n\n")
    assert re.search(r'<mnemo-memories>\n\d{4}-\d{2}-\d{2}\n"I keep bees"\n</mnemo-memories>', instructions)
    exchange = recorded_exchange(redis_client, raw.headers["x-mnemo-request-id"])
    assert [(m.role, m.content) for m in exchange.messages] == [("system", "Be brief."), ("user", question)]
    assert exchange.reply == f"Echo: {question}"


def test_previous_response_id_store_tools_reasoning_and_unknown_fields_pass_through_and_only_the_new_input_is_recorded(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    jo = new_user("jo")
    client = sync_client(mnemo, jo)
    first = client.responses.create(model="gpt-test", input="I sail on Sundays", store=True)
    wait_for_texts(mnemo, jo, ["I sail on Sundays"])
    tools: Any = [{"type": "function", "name": "find_marina", "parameters": {"type": "object", "properties": {}}}]
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "Where should I sail?"}]},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"marina": "Cascais"}'},
    ]
    fields: dict[str, Any] = {
        "previous_response_id": first.id,
        "store": True,
        "tools": tools,
        "reasoning": {"effort": "low"},
        "metadata": {"ticket": "42"},
    }
    raw = client.responses.with_raw_response.create(
        model="gpt-test", input=items, **fields, extra_body={"mnemo_future_field": {"kept": [1, 2]}}
    )
    assert raw.parse().output_text == "Echo: Where should I sail?"  # the upstream knew the previous id
    sent = upstream.requests[-1].body
    assert {name: sent[name] for name in fields} == fields
    assert sent["input"] == items and sent["mnemo_future_field"] == {"kept": [1, 2]}
    assert "I sail on Sundays" in sent["instructions"]
    exchange = recorded_exchange(redis_client, raw.headers["x-mnemo-request-id"])
    assert [(m.role, m.content) for m in exchange.messages] == [("user", "Where should I sail?")]


def test_a_fact_told_through_chat_completions_reaches_a_later_response_and_the_other_way_round(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    kai = new_user("kai")
    client = sync_client(mnemo, kai)
    client.chat.completions.create(model="gpt-test", messages=user_message("I live in Porto"))  # type: ignore[arg-type]
    wait_for_texts(mnemo, kai, ["I live in Porto"])
    client.responses.create(model="gpt-test", input="I play the cello")
    assert "I live in Porto" in upstream.requests[-1].body["instructions"]
    wait_for_texts(mnemo, kai, ["I live in Porto", "I play the cello"])

    client.chat.completions.create(model="gpt-test", messages=user_message("What do I play?"))  # type: ignore[arg-type]
    assert "I play the cello" in upstream.of_task("chat")[-1].system_prompt


def test_a_response_stream_cut_by_the_upstream_and_an_upstream_error_record_nothing(
    mnemo: MnemoThread, upstream: ScriptedUpstream, redis_client: redis_sync.Redis
) -> None:
    lu = new_user("lu")
    before = counts(mnemo)
    upstream.failures.append(Failure(cut_after_chunks=5))
    with pytest.raises(openai.APIError):
        list(sync_client(mnemo, lu).responses.create(model="gpt-test", input="I hate olives", stream=True))
    upstream.failures.append(Failure(status=429))
    with pytest.raises(openai.RateLimitError, match="scripted 429"):
        sync_client(mnemo, lu).responses.create(model="gpt-test", input="I hate olives")
    assert_no_trace(mnemo, upstream, redis_client, lu, before=before, requests=2)


def test_a_route_served_through_litellm_answers_400_naming_its_provider(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client(mnemo, "mo").responses.create(model="claude-test", input="hello")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_provider" and error["param"] == "model"
    assert "provider `anthropic`" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 42}, "input"),
        ({"input": ["not an item"]}, "input[0]"),
        ({"input": "hi", "instructions": ["a"]}, "instructions"),
        ({"input": "hi", "stream": "yes"}, "stream"),
        ({"input": "hi", "model": ""}, "model"),
    ],
)
def test_a_malformed_responses_body_is_a_400_naming_the_field(
    mnemo: MnemoThread, upstream: ScriptedUpstream, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(mnemo.url + "/v1/responses", json={"model": "gpt-test", **body}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []
