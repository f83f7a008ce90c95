"""The extraction LLM's direct OpenAI-compatible client against the scripted upstream over real
HTTP: what it sends, what it reads back, and how provider errors are sorted into transient (the
job is retried) and permanent ones."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mnemo.config import ExtractionSettings
from mnemo.errors import ExtractionError, TransientExtractionError
from mnemo.llm import OpenAICompatibleLLM, build_llm, uses_litellm
from tests.support.servers import free_port
from tests.support.upstream import Failure, ScriptedUpstream

SYSTEM = "Answer in JSON."

Make = Callable[..., OpenAICompatibleLLM]


@pytest.fixture
async def make_llm(upstream_url: str) -> AsyncIterator[Make]:
    made: list[OpenAICompatibleLLM] = []

    def make(**fields: Any) -> OpenAICompatibleLLM:
        settings = {"mode": "llm", "model": "openai/scripted", "base_url": upstream_url, "api_key": "sk-extract"}
        llm = OpenAICompatibleLLM(ExtractionSettings.model_validate(settings | fields))
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


async def test_asks_for_json_at_temperature_zero_and_reads_text_and_usage(
    upstream: ScriptedUpstream, make_llm: Make
) -> None:
    completion = await make_llm().complete(SYSTEM, "I live in Lisbon")

    assert json.loads(completion.text) == {"reply": "Echo: I live in Lisbon"}
    assert completion.prompt_tokens == 10 and completion.completion_tokens > 0
    (sent,) = upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-extract"
    assert sent.body == {
        "model": "scripted",  # the provider's name, without litellm's "openai/" routing prefix
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "I live in Lisbon"}],
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }


async def test_without_a_configured_key_uses_openai_api_key(
    upstream: ScriptedUpstream, make_llm: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")

    await make_llm(api_key=None).complete(SYSTEM, "hi")

    assert upstream.requests[0].headers["authorization"] == "Bearer sk-from-env"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_busy_or_failing_provider_is_transient(upstream: ScriptedUpstream, make_llm: Make, status: int) -> None:
    upstream.failures.append(Failure(status=status))

    with pytest.raises(TransientExtractionError, match=f"HTTP {status}"):
        await make_llm().complete(SYSTEM, "hi")


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_rejected_request_is_permanent_and_names_the_providers_message(
    upstream: ScriptedUpstream, make_llm: Make, status: int
) -> None:
    upstream.failures.append(Failure(status=status))

    with pytest.raises(ExtractionError, match=f"HTTP {status}: scripted {status}") as raised:
        await make_llm().complete(SYSTEM, "hi")
    assert not isinstance(raised.value, TransientExtractionError)


async def test_an_answer_that_is_not_a_chat_completion_is_permanent(upstream: ScriptedUpstream, make_llm: Make) -> None:
    upstream.failures.append(Failure(status=200, body='{"unexpected": true}'))

    with pytest.raises(ExtractionError, match="without a chat completion") as raised:
        await make_llm().complete(SYSTEM, "hi")
    assert not isinstance(raised.value, TransientExtractionError)


async def test_an_unreachable_provider_is_transient(make_llm: Make) -> None:
    llm = make_llm(base_url=f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(TransientExtractionError, match="ConnectError"):
        await llm.complete(SYSTEM, "hi")


async def test_a_provider_slower_than_the_timeout_is_transient(upstream: ScriptedUpstream, make_llm: Make) -> None:
    upstream.failures.append(Failure(delay_s=1.0))

    with pytest.raises(TransientExtractionError, match="ReadTimeout"):
        await make_llm(timeout_s=0.2).complete(SYSTEM, "hi")


async def test_openai_models_go_direct_and_other_providers_through_litellm(upstream_url: str) -> None:
    direct = ExtractionSettings(mode="llm", model="openai/gpt-4o-mini", base_url=upstream_url)
    other = ExtractionSettings(mode="llm", model="anthropic/claude-3-5-haiku-latest")

    llm = build_llm(direct)
    await llm.aclose()

    assert isinstance(llm, OpenAICompatibleLLM) and not uses_litellm(direct)
    assert uses_litellm(other)
