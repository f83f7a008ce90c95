"""Under ``mnemo up`` the worker shares the gateway's process: the gateway marks the chats in
flight, and the worker then runs one job at a time, catching up when no chat is in flight."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import openai
from arq.connections import RedisSettings

from mnemo.config import Settings
from mnemo.runtime import Core
from tests.conftest import wait_until
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream
from workers.settings import ResilientWorker, build_worker


def test_a_streaming_chat_counts_as_in_flight_until_its_stream_ends(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream
) -> None:
    mnemo = MnemoThread(make_settings(extraction="raw"), worker=False).start()
    try:
        upstream.first_chunk_delay_s = 1.0
        client = openai.OpenAI(base_url=mnemo.url + "/v1", api_key="sk-x", default_headers={"X-Mnemo-User-Id": "ida"})

        def stream_all() -> str:
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(stream_all)
            wait_until(lambda: mnemo.core.activity.in_flight == 1, timeout=5)
            assert reply.result(30) == "Echo: hi"
        wait_until(lambda: mnemo.core.activity.in_flight == 0, timeout=5)  # the server finishes after the client
    finally:
        mnemo.stop()


def in_process_worker(settings: Settings) -> tuple[ResilientWorker, Core]:
    """Built inside a running loop, as arq's Worker takes the current loop (a sync test would
    leave a new, never closed one behind)."""
    core = Core(embedder=cast(Any, None), store=cast(Any, None))  # never used: no job runs here
    return cast(ResilientWorker, build_worker(settings, RedisSettings(), core=core)), core


async def test_while_chats_are_in_flight_the_worker_starts_one_job_at_a_time(
    make_settings: Callable[..., Settings],
) -> None:
    worker, core = in_process_worker(make_settings(extraction="raw"))
    full_batch = worker.queue_read_limit

    with core.activity.chat():
        worker._yield_to_chats()
        assert (worker.queue_read_limit, worker.allow_pick_jobs) == (1, True)
        worker.job_counter = 1  # one job running: no other starts until the chats are done
        worker._yield_to_chats()
        assert worker.allow_pick_jobs is False

    worker._yield_to_chats()
    assert (worker.queue_read_limit, worker.allow_pick_jobs) == (full_batch, True)
    assert full_batch > 1


async def test_a_worker_of_its_own_never_yields(make_settings: Callable[..., Settings]) -> None:
    worker = cast(ResilientWorker, build_worker(make_settings(extraction="raw"), RedisSettings()))
    worker.job_counter = 3

    worker._yield_to_chats()

    assert worker.allow_pick_jobs is True and worker.queue_read_limit > 1
