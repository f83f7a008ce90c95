"""Under ``mnemo up`` the worker shares the gateway's process: the gateway marks the chats in
flight, and the worker then starts a job only when every running one waits (on its LLM, its turn
or its user's lock), going full width when no chat is in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from mnemo.config import Settings
from tests.conftest import wait_until
from tests.support.ledger import thread_tally
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream
from workers.settings import ResilientWorker

BUSY_HEADERS = {"X-Mnemo-User-Id": "busy", "X-Mnemo-Memory": "off"}


def user_message(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_a_streaming_chat_counts_as_in_flight_until_its_stream_ends(
    make_settings: Callable[..., Settings], upstream: ScriptedUpstream
) -> None:
    mnemo = MnemoThread(make_settings(extraction="raw"), worker=False).start()
    try:
        upstream.hold_at_chunk = 1  # the stream is mid-way until the test has seen the chat in flight
        client = openai.OpenAI(base_url=mnemo.url + "/v1", api_key="sk-x", default_headers={"X-Mnemo-User-Id": "ida"})

        def stream_all() -> str:
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(stream_all)
            wait_until(lambda: mnemo.core.activity.in_flight == 1 and upstream.open_streams == 1, timeout=5)
            upstream.release.set()
            assert reply.result(30) == "Echo: hi"
        wait_until(lambda: mnemo.core.activity.in_flight == 0, timeout=5)  # the server finishes after the client
    finally:
        mnemo.stop()


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
    upstream.json_hold_until_peak = 2  # the first extraction call waits until a second one is made
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
