"""The configurable alternatives of the core loop: a non-OpenAI provider route through litellm,
and an OpenAI-compatible embeddings endpoint instead of the bundled embedder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from mnemo.config import EmbedderSettings, Settings
from mnemo.embedding import OpenAIEmbedder
from mnemo.errors import EmbedderError
from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.servers import MnemoThread
from tests.support.upstream import EMBEDDING_DIMENSION, ScriptedUpstream


@pytest.fixture
def litellm_mnemo(make_settings: Callable[..., Settings], upstream_url: str) -> Iterator[MnemoThread]:
    # hosted_vllm is a litellm provider (not Mnemo's "openai" fast path) that speaks to any base URL.
    route = {"name": "via-litellm", "provider": "hosted_vllm", "model": "scripted", "base_url": upstream_url}
    running = MnemoThread(make_settings(extraction="raw", models=[route])).start()
    yield running
    running.stop()


def test_a_non_openai_provider_route_goes_through_litellm_and_streams_in_openai_format(
    litellm_mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    client = openai.OpenAI(
        base_url=litellm_mnemo.url + "/v1", api_key="sk-x", default_headers={"X-Mnemo-User-Id": "lena"}, max_retries=0
    )
    reply = client.chat.completions.create(
        model="via-litellm", messages=[{"role": "user", "content": "I sail on Sundays"}]
    )
    assert reply.choices[0].message.content == "Echo: I sail on Sundays"
    assert upstream.of_task("chat")[-1].body["model"] == "scripted"
    chunks = client.chat.completions.create(
        model="via-litellm", messages=[{"role": "user", "content": "What do I do on Sundays?"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: What do I do on Sundays?"
    memories = wait_until(lambda: litellm_mnemo.call(lambda core: core.store.list(Scope(user_id="lena"))))
    assert "I sail on Sundays" in {m.text for m in memories}


async def test_the_openai_compatible_embedder_returns_unit_vectors_in_input_order(
    upstream: ScriptedUpstream, upstream_url: str
) -> None:
    settings = EmbedderSettings(kind="openai", model="embed-test", base_url=upstream_url, dimension=EMBEDDING_DIMENSION)
    embedder = OpenAIEmbedder(settings)
    try:
        first, second = await embedder.embed(["tacos in Austin", "sailing on Sundays"])
    finally:
        await embedder.close()
    assert embedder.model_id == "openai:embed-test" and len(first) == EMBEDDING_DIMENSION
    assert abs(sum(v * v for v in first) - 1.0) < 1e-6 and first != second
    assert upstream.requests[-1].body == {"model": "embed-test", "input": ["tacos in Austin", "sailing on Sundays"]}


async def test_the_openai_compatible_embedder_rejects_vectors_of_the_wrong_size(upstream_url: str) -> None:
    settings = EmbedderSettings(
        kind="openai", model="embed-test", base_url=upstream_url, dimension=EMBEDDING_DIMENSION + 1
    )
    embedder = OpenAIEmbedder(settings)
    try:
        with pytest.raises(EmbedderError, match="wrong number or size"):
            await embedder.embed(["anything"])
    finally:
        await embedder.close()
