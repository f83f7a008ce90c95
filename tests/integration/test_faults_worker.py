"""Worker crash: ``mnemo up`` (gateway and worker in one process) is SIGKILLed while jobs are
mid-extraction, against a private Redis that survives the kill. A new ``mnemo up`` on the
same data directory processes every exchange within seconds (the dead drains' claims lapse;
nothing waits for arq's in-progress keys, which live for the default 300 s job timeout); no
memory and no event is written twice."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import yaml

from mnemo.user_order import user_key
from tests.conftest import wait_until
from tests.support.ledger import Tally, data_dir_tally
from tests.support.probes import chat_as
from tests.support.process import MnemoProcess
from tests.support.redis_server import RedisServer
from tests.support.upstream import ScriptedUpstream

DRAIN_BOUND_S = 30  # the goal for a whole backlog after a restart (measured: a few seconds)
FACTS = {
    "crash-ann": ["I play the cello", "I speak Finnish", "I grow tomatoes"],
    "crash-bob": ["I ride a unicycle", "I bake sourdough", "I read Tolstoy"],
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def mnemo_process(tmp_path: Path, upstream_url: str, redis_server: RedisServer) -> Iterator[MnemoProcess]:
    process = MnemoProcess(tmp_path, upstream_url)
    configure(
        process,
        redis={"url": redis_server.url, "queue_name": f"mnemo:crash:{uuid.uuid4().hex}"},
        extraction={"mode": "llm", "model": "openai/scripted", "base_url": upstream_url, "api_key": "k"},
        worker={"retry_base_delay_s": 0.1, "max_jobs": 4},
    )
    yield process
    process.kill()


def configure(process: MnemoProcess, **sections: dict[str, Any]) -> None:
    config = yaml.safe_load(process.config.read_text())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    process.config.write_text(yaml.safe_dump(config))


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(
    mnemo_process: MnemoProcess, upstream: ScriptedUpstream, redis_server: RedisServer
) -> None:
    upstream.json_delay_s = 1.0  # every extraction or decision call takes a second: jobs are slow
    mnemo_process.start()
    sent: dict[str, str] = {}
    for index in range(3):
        for user, facts in FACTS.items():
            sent[chat_as(mnemo_process.base_url, user, facts[index])] = user
    wait_until(lambda: len(upstream.of_task("extract")) >= 2, timeout=30)
    assert mnemo_process.process is not None
    mnemo_process.process.send_signal(signal.SIGKILL)  # mid-job: an extraction answer is pending
    mnemo_process.process.wait(10)
    before_restart = len(upstream.of_task("extract"))
    assert before_restart < len(sent)  # the kill really came before the work was done

    upstream.json_delay_s = 0.0
    mnemo_process.start()
    restarted = time.monotonic()
    queue = yaml.safe_load(mnemo_process.config.read_text())["redis"]["queue_name"]
    wait_until(lambda: all_drained(redis_server, queue, FACTS), timeout=DRAIN_BOUND_S + 30, interval=0.1)
    drained_after_s = time.monotonic() - restarted
    assert drained_after_s < DRAIN_BOUND_S, f"the backlog took {drained_after_s:.1f}s to drain after the restart"
    assert mnemo_process.stop() == 0
    result, memories, events = data_dir_tally(mnemo_process.settings, sent)
    assert result == Tally(sent=6, stored=6, duplicated=0, lost=0)
    assert len(events) == 6 and len({event.id for event in events}) == 6
    for user, facts in FACTS.items():
        assert sorted(m.text for m in memories if m.user_id == user) == sorted(facts)


def all_drained(redis: RedisServer, queue: str, users: dict[str, Any]) -> bool:
    client = redis_sync.Redis.from_url(redis.url)
    try:
        return all(
            client.llen(user_key(queue, "pending", user)) == 0 and not client.exists(user_key(queue, "claim", user))
            for user in users
        )
    finally:
        client.close()
