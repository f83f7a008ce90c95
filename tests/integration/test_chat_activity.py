"""Under ``mnemo up`` the worker shares the gateway's process: the gateway marks the chats in
flight, and the worker then starts a job only when every running one waits (on its LLM, its turn
or its user's lock), going full width when no chat is in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast

import httpx
import openai
import pytest
from arq import Worker
from arq.connections import RedisSettings

from mnemo.config import Settings
from mnemo.runtime import Core
from tests.conftest import wait_until
from tests.support.ledger import thread_tally
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream
from workers.settings import ResilientWorker, build_worker

BUSY_HEADERS = {"X-Mnemo-User-Id": "busy", "X-Mnemo-Memory": "off"}


def user_message(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


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


async def test_while_chats_are_in_flight_the_worker_starts_a_job_only_when_every_running_one_waits(
    make_settings: Callable[..., Settings],
) -> None:
    worker, core = in_process_worker(make_settings(extraction="raw"))
    waits = worker._waits
    full_batch = worker.queue_read_limit

    with core.activity.chat():
        worker._yield_to_chats()
        assert (worker.queue_read_limit, worker.allow_pick_jobs) == (1, True)
        worker.job_counter = 1  # one job running on the CPU: no other starts until the chats are done
        worker._yield_to_chats()
        assert worker.allow_pick_jobs is False
        with waits.wait():  # ... until it waits on its LLM: then one more may start
            worker._yield_to_chats()
            # Running jobs stay at the head of the queue: the read reaches one past them.
            assert (worker.queue_read_limit, worker.allow_pick_jobs) == (2, True)

    worker._yield_to_chats()
    assert (worker.queue_read_limit, worker.allow_pick_jobs) == (full_batch, True)
    assert full_batch > 1


@contextmanager
def a_chat_always_in_flight(mnemo: MnemoThread, upstream: ScriptedUpstream) -> Iterator[None]:
    """One stream of up to a minute (the reply echoes 1,200 words), so no poll finds the gateway idle."""
    upstream.chunks, upstream.chunk_delay_s = 1200, 0.05
    busy, stop = threading.Event(), threading.Event()

    def keep_a_chat_in_flight() -> None:
        client = openai.OpenAI(base_url=mnemo.url + "/v1", api_key="sk-x", default_headers=BUSY_HEADERS)
        long_message = user_message(" ".join(["hi"] * 1200))
        with client.chat.completions.create(model="m", messages=long_message, stream=True) as stream:
            for _ in stream:
                busy.set()
                if stop.is_set():
                    return

    chats = threading.Thread(target=keep_a_chat_in_flight)
    chats.start()
    try:
        assert busy.wait(10)
        yield
        assert mnemo.core.activity.busy  # the chat never stopped
    finally:
        stop.set()
        chats.join(30)


def send_exchanges(mnemo: MnemoThread, count: int) -> dict[str, str]:
    """One chat each for ``count`` users; the request ids they were recorded under, to each user."""
    sent: dict[str, str] = {}
    with httpx.Client(base_url=mnemo.url, timeout=30) as api:
        for i in range(count):
            user = f"rider-{i}"
            response = api.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": user_message(f"I own {i + 2} red bikes")},
                headers={"X-Mnemo-User-Id": user},
            )
            sent[response.headers["x-mnemo-request-id"]] = user
    return sent


def apply_under_steady_traffic(settings: Settings, upstream: ScriptedUpstream, count: int) -> dict[str, str]:
    """``count`` exchanges sent while a chat is always in flight; returns once all are stored."""
    mnemo = MnemoThread(settings).start()
    try:
        with a_chat_always_in_flight(mnemo, upstream):
            sent = send_exchanges(mnemo, count)
            wait_until(lambda: thread_tally(mnemo, sent).stored == len(sent), timeout=60, interval=0.1)
    finally:
        mnemo.stop()
    return sent


def test_extraction_calls_overlap_while_a_chat_is_always_in_flight(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream
) -> None:
    """A gateway with steady traffic always has a chat in flight. Jobs waiting on their LLM hold
    no CPU, so they must not stop other jobs from starting: one job at a time would apply one
    exchange per LLM round trip."""
    upstream.json_delay_s = 0.3
    apply_under_steady_traffic(make_settings(), upstream, 8)
    assert upstream.json_peak > 1


def test_once_behind_raw_jobs_follow_each_other_without_waiting_for_a_poll_while_a_chat_is_always_in_flight(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw jobs use the CPU, so while chats are in flight they run one at a time. Had each one
    waited for the next poll (every 50 ms), a gateway with steady traffic would apply 20
    exchanges a second however fast the jobs are, and a backlog would grow for as long as the
    traffic lasted: once the worker is behind, a job that ends makes room for the next one."""
    started_by_poll: list[int] = []
    started = 0
    run_job, poll_iteration = ResilientWorker.run_job, ResilientWorker._poll_iteration

    def counted_run_job(worker: ResilientWorker, job_id: str, score: int) -> Coroutine[Any, Any, None]:
        nonlocal started
        started += 1  # counted when arq claims the job and makes its task, not when the task runs
        return run_job(worker, job_id, score)

    async def counted_poll_iteration(worker: ResilientWorker) -> None:
        before = started
        await poll_iteration(worker)
        started_by_poll.append(started - before)

    monkeypatch.setattr(ResilientWorker, "run_job", counted_run_job)
    monkeypatch.setattr(ResilientWorker, "_poll_iteration", counted_poll_iteration)
    settings = make_settings(extraction="raw", worker={"catch_up_after_s": 0})  # behind from the first job
    sent = apply_under_steady_traffic(settings, upstream, 20)
    assert started >= len(sent)
    assert max(started_by_poll) > 1  # each job waiting for its own poll gives exactly 1


async def test_while_chats_are_in_flight_jobs_wait_for_a_poll_each_until_the_worker_falls_behind(
    make_settings: Callable[..., Settings],
) -> None:
    """A burst of chats is answered first and its exchanges applied after it; only a worker
    ``catch_up_after_s`` behind (the last job started had been due that long) runs jobs back to back."""
    worker, core = in_process_worker(make_settings(extraction="raw", worker={"catch_up_after_s": 5}))
    worker._lag_s = 4.9
    with core.activity.chat():
        assert worker._catching_up() is False
        worker._lag_s = 5.0
        assert worker._catching_up() is True
    assert worker._catching_up() is False  # no chat in flight: up to max_jobs start at each poll anyway


async def test_the_lag_is_how_long_the_job_started_last_had_been_due(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run(worker: Worker, job_id: str, score: int) -> None:
        return None

    monkeypatch.setattr(Worker, "run_job", run)
    worker, _ = in_process_worker(make_settings(extraction="raw"))

    await worker.run_job("job", int((time.time() - 3) * 1000))  # arq scores a job by when it is due, in ms

    assert 2.9 < worker._lag_s < 3.5


async def test_a_worker_of_its_own_never_yields(make_settings: Callable[..., Settings]) -> None:
    worker = cast(ResilientWorker, build_worker(make_settings(extraction="raw"), RedisSettings()))
    worker.job_counter = 3

    worker._yield_to_chats()

    assert worker.allow_pick_jobs is True and worker.queue_read_limit > 1
