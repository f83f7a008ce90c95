"""`mnemo up` as a user runs it: one process, embedded Redis, Qdrant Edge, the bundled embedder.
Driven by the real openai SDK; the only stand-in is the scripted upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from mnemo.embedded_redis import EmbeddedRedis
from mnemo.models import Scope, utcnow
from mnemo.queue import Exchange, ExchangeMessage, ExchangeQueue, redis_settings
from tests.conftest import wait_until
from tests.support.files import files_holding
from tests.support.process import MnemoProcess
from tests.support.upstream import ScriptedUpstream


@pytest.fixture
def mnemo_process(tmp_path: Path, upstream_url: str) -> Iterator[MnemoProcess]:
    process = MnemoProcess(tmp_path, upstream_url)
    yield process
    process.kill()


def injected(client: openai.OpenAI, upstream: ScriptedUpstream, question: str) -> str:
    client.chat.completions.create(model="any-model", messages=[{"role": "user", "content": question}])
    return upstream.of_task("chat")[-1].system_prompt


def test_mnemo_up_remembers_across_sessions_and_restarts_with_nothing_but_a_config_file(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    carol = mnemo_process.start().client("carol")
    carol.chat.completions.create(model="any-model", messages=[{"role": "user", "content": "I keep bees on my roof"}])
    wait_until(lambda: "bees" in injected(carol, upstream, "What do you know about my bees?"))
    assert "bees" not in injected(mnemo_process.client("dave"), upstream, "What do you know about my bees?")
    assert mnemo_process.stop() == 0

    mnemo_process.start()
    assert "bees" in injected(carol, upstream, "What do you know about my bees?")
    assert mnemo_process.stop() == 0


def test_an_exchange_queued_before_a_restart_is_processed_after_it(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    settings = mnemo_process.settings

    async def enqueue_while_mnemo_is_down() -> None:
        redis = EmbeddedRedis(settings.data_path)
        await redis.start()
        queue = await ExchangeQueue.connect(redis_settings(settings, str(redis.socket_path)), settings.redis.queue_name)
        now = utcnow()
        await queue.enqueue(
            Exchange(
                request_id="req_before_restart",
                scope=Scope(user_id="erin"),
                model="any-model",
                messages=[ExchangeMessage(role="user", content="My cat is called Miso")],
                reply="Nice!",
                started_at=now,
                completed_at=now,
            )
        )
        await queue.close()
        await redis.stop()

    asyncio.run(enqueue_while_mnemo_is_down())
    erin = mnemo_process.start().client("erin")
    wait_until(lambda: "Miso" in injected(erin, upstream, "What is my cat called?"))


def test_erasing_a_user_leaves_none_of_their_words_in_the_data_directory(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    """The store only marks deleted points and Redis logs every write to its append-only file: an
    erasure must reach both files, not just what the API shows."""
    data = mnemo_process.settings.data_path
    mnemo_process.start()
    for user, said in (("gone", "My passport number is ZQX-81723"), ("stays", "I keep bees on my roof")):
        mnemo_process.client(user).chat.completions.create(
            model="any-model", messages=[{"role": "user", "content": said}]
        )
    with httpx.Client(base_url=mnemo_process.base_url, timeout=30) as api:

        def remembers(user: str, word: str) -> bool:
            return word in api.get("/memories", params={"user_id": user}).text

        wait_until(lambda: remembers("gone", "ZQX-81723") and remembers("stays", "bees"))
        assert files_holding(data, "ZQX-81723")

        assert api.delete("/users/gone").json()["memories"] == 1

    wait_until(lambda: files_holding(data, "ZQX-81723") == [], timeout=30, interval=0.2)
    assert mnemo_process.stop() == 0
    assert files_holding(data, "ZQX-81723") == []
    assert files_holding(data, "bees")
