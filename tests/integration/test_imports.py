"""`mnemo import` against a running Mnemo: every format's exchanges go through the queue and the
worker like live chats and are stored with their original times; a re-run creates nothing twice;
a CLI killed mid-import is resumed by running it again; an erasure during an import leaves
nothing of it; the dry run sends nothing; an import waits for the worker past imports.max_pending."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from mnemo.models import Memory, Scope
from mnemo_cli.main import main
from tests.conftest import wait_until
from tests.support.import_files import (
    at,
    chatgpt_export,
    claude_export,
    jsonl_lines,
    locomo_sample,
    write_json,
    write_jsonl,
)
from tests.support.probes import LITELLM_READONLY_WARNING, Gateways, new_user
from tests.support.servers import MnemoThread

pytestmark = LITELLM_READONLY_WARNING
RAW = {"extraction": {"mode": "raw"}}


def memories(mnemo: MnemoThread, user: str) -> list[Memory]:
    found = mnemo.call(lambda core: core.store.list(Scope(user_id=user), include_invalidated=True, limit=500))
    return sorted(found, key=lambda m: (m.created_at, m.text))


def run_import(capsys: pytest.CaptureFixture[str], mnemo: MnemoThread, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["import", *argv, "--url", mnemo.url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def import_json(capsys: pytest.CaptureFixture[str], mnemo: MnemoThread, *argv: str) -> dict[str, Any]:
    code, out, err = run_import(capsys, mnemo, *argv, "--json")
    assert code == 0, err
    return dict(json.loads(out))


FORMATS: dict[str, tuple[Callable[[Path], Path], list[tuple[str, datetime]]]] = {
    "chatgpt": (
        lambda d: write_json(d / "conversations.json", chatgpt_export()),
        [("I live in Lisbon", at(2)), ("I drink oolong tea", at(4)), ("I play the cello", at(63))],
    ),
    "claude": (
        lambda d: write_json(d / "conversations.json", claude_export()),
        [("I live in Porto", at(2)), ("I love kayaking", at(4))],
    ),
    "jsonl": (
        lambda d: write_jsonl(d / "history.jsonl", jsonl_lines()),
        [("I moved to Quito", at(2)), ("I go bouldering on weekends", at(5))],
    ),
    "locomo": (
        lambda d: write_json(d / "locomo.json", [locomo_sample()]),
        [
            ("I took up pottery last week.", datetime.fromisoformat("2023-05-08T13:56:00+00:00")),
            ("That sounds relaxing! [shared a clay bowl]", datetime.fromisoformat("2023-05-08T13:56:01+00:00")),
            ("I went hiking on Sunday.", datetime.fromisoformat("2023-06-09T10:00:02+00:00")),
        ],
    ),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_is_imported_with_its_original_times(
    gateways: Gateways, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    mnemo = gateways.get(**RAW)
    write, expected = FORMATS[fmt]
    path, user = write(tmp_path), new_user(fmt)
    record = import_json(capsys, mnemo, str(path), "--user", user)  # --format auto: detected
    assert record["format"] == fmt and record["status"] == "done"
    assert (record["queued"], record["applied"], record["failed"]) == (len(expected), len(expected), 0)
    stored = memories(mnemo, user)
    assert [(m.text, m.created_at) for m in stored] == sorted(expected, key=lambda pair: (pair[1], pair[0]))
    assert all(m.metadata["imported_from"] == fmt and m.session_id is None for m in stored)
    events = mnemo.call(lambda core: core.store.list_events(user))
    assert sorted(e.created_at for e in events) == sorted(when for _, when in expected)


def test_a_rerun_creates_nothing_twice(gateways: Gateways, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mnemo = gateways.get(**RAW)
    path, user = write_json(tmp_path / "conversations.json", chatgpt_export()), new_user("rerun")
    first = import_json(capsys, mnemo, str(path), "--user", user, "--batch", "1")
    before = [(m.id, m.text) for m in memories(mnemo, user)]
    again = import_json(capsys, mnemo, str(path), "--user", user)
    assert (first["queued"], first["duplicates"]) == (3, 0)
    assert (again["queued"], again["duplicates"], again["applied"], again["status"]) == (0, 3, 0, "done")
    assert [(m.id, m.text) for m in memories(mnemo, user)] == before and len(before) == 3
    assert len(mnemo.call(lambda core: core.store.list_events(user))) == 3
    # The same file for another user writes that user's own memories (ids derive from the scope too).
    other = new_user("rerun-other")
    import_json(capsys, mnemo, str(path), "--user", other)
    assert [m.text for m in memories(mnemo, other)] == [text for _, text in before]
    assert not {m.id for m in memories(mnemo, other)} & {memory_id for memory_id, _ in before}


def many_lines(count: int, word: str) -> list[dict[str, Any]]:
    return [
        {"id": f"l{n}", "role": "user", "content": f"I note {word} number {n}", "created_at": at(n).isoformat()}
        for n in range(count)
    ]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def cli_process(
    processes: list[subprocess.Popen[bytes]], path: Path, user: str, mnemo: MnemoThread, *extra: str
) -> subprocess.Popen[bytes]:
    """The installed CLI in a process of its own (so a test can SIGKILL it)."""
    command = [sys.executable, "-m", "mnemo_cli.main", "import", str(path), "--user", user, "--url", mnemo.url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    process = subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    processes.append(process)
    return process


def import_record(redis_client: redis_sync.Redis, mnemo: MnemoThread) -> dict[str, str]:
    """The one import record of this Mnemo's queue, as Redis holds it (empty until one exists)."""
    keys = redis_client.keys(mnemo.settings.redis.queue_name + ":import:*")
    if not keys:
        return {}
    return {k.decode(): v.decode() for k, v in redis_client.hgetall(keys[0]).items()}


def test_a_cli_killed_mid_import_is_resumed_by_running_it_again(
    gateways: Gateways, tmp_path: Path, redis_client: redis_sync.Redis, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The import goes at the worker's pace (2 exchanges waiting at most, each taking 0.2 s of
    extraction), so the CLI is SIGKILLed with part of the file sent; the second run sends it all
    again, and every message is stored exactly once."""
    mnemo = gateways.get(fresh=True, imports={"max_pending": 2})
    gateways.upstream.json_delay_s = 0.2
    path, user = write_jsonl(tmp_path / "long.jsonl", many_lines(12, "heron")), new_user("resume")
    killed = cli_process(processes, path, user, mnemo, "--batch", "2", "--mode", "llm")
    wait_until(lambda: int(import_record(redis_client, mnemo).get("queued", 0)) >= 2, timeout=30)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    assert import_record(redis_client, mnemo)["input_done"] == "0"  # killed before sending everything
    resumed = cli_process(processes, path, user, mnemo, "--batch", "4", "--mode", "llm", "--json")
    out, err = resumed.communicate(timeout=90)
    assert resumed.returncode == 0, err.decode()
    record = json.loads(out)
    assert record["status"] == "done" and record["duplicates"] >= 2 and record["queued"] + record["duplicates"] == 12
    texts = [m.text for m in memories(mnemo, user)]
    assert sorted(texts) == sorted(f"I note heron number {n}" for n in range(12))
    assert "%" in err.decode() and "ETA" in err.decode()  # the progress line


def test_erasing_the_user_during_an_import_leaves_nothing(
    gateways: Gateways,
    tmp_path: Path,
    redis_client: redis_sync.Redis,
    capsys: pytest.CaptureFixture[str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    mnemo = gateways.get(fresh=True, imports={"max_pending": 2})
    gateways.upstream.json_delay_s = 0.3
    path, user = write_jsonl(tmp_path / "secret.jsonl", many_lines(10, "Zanzibarquill")), new_user("erased")
    running = cli_process(processes, path, user, mnemo, "--batch", "2", "--mode", "llm")
    wait_until(lambda: int(import_record(redis_client, mnemo).get("queued", 0)) >= 2, timeout=30)
    erased = httpx.delete(f"{mnemo.url}/v1/users/{user}", timeout=60)
    assert erased.status_code == 200, erased.text
    out, err = running.communicate(timeout=60)
    assert running.returncode == 1 and b"was erased during the import" in err
    record = import_record(redis_client, mnemo)
    wait_until(lambda: redis_client.llen(f"{mnemo.settings.redis.queue_name}:pending:{user}") == 0)
    time.sleep(0.5)  # an exchange still being written would land now
    assert memories(mnemo, user) == []
    assert mnemo.call(lambda core: core.store.list_events(user)) == []
    assert int(record["queued"]) < 10  # the rest were never accepted
    # An import after the erasure is a new start: everything is stored.
    after = import_json(capsys, mnemo, str(path), "--user", user, "--mode", "raw")
    assert (after["status"], after["queued"], after["duplicates"]) == ("done", 10, 0)
    assert len(memories(mnemo, user)) == 10


def test_a_dry_run_counts_and_estimates_and_sends_nothing(
    gateways: Gateways, tmp_path: Path, redis_client: redis_sync.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    mnemo = gateways.get(fresh=True)  # llm extraction through the scripted upstream
    path, user = write_json(tmp_path / "conversations.json", chatgpt_export()), new_user("dry")
    found = import_json(capsys, mnemo, str(path), "--user", user, "--dry-run")
    assert (found["conversations"], found["exchanges"]) == (2, 3)
    assert found["estimate"]["llm_calls"] == 4 and "no measured extraction jobs yet" in found["estimate"]["basis"]
    assert import_record(redis_client, mnemo) == {} and memories(mnemo, user) == []
    # Once the worker has measured averages, the estimate is theirs.
    import_json(capsys, mnemo, str(path), "--user", new_user("measured"))
    code, out, err = run_import(capsys, mnemo, str(path), "--user", user, "--dry-run")
    assert code == 0 and "would cost (llm mode)" in out and "the worker's averages over 3 applied" in out
    assert "chatgpt, 2 conversations, 3 exchanges" in err and "nothing was sent" in out
    assert memories(mnemo, user) == []


def test_a_batch_over_max_pending_is_held_back(gateways: Gateways) -> None:
    mnemo = gateways.get(fresh=True, imports={"max_pending": 1})
    gateways.upstream.json_delay_s = 1.0
    user = new_user("pressure")
    created = httpx.post(f"{mnemo.url}/v1/imports", json={"user_id": user, "mode": "llm"}, timeout=10).json()
    batch = {
        "user_id": user,
        "exchanges": [
            {"conversation_id": "c", "id": f"m{n}", "messages": [{"role": "user", "content": f"I have {n} cats"}]}
            for n in range(3)
        ],
    }
    first = httpx.post(f"{mnemo.url}/v1/imports/{created['id']}/exchanges", json=batch, timeout=10)
    assert first.status_code == 200 and first.json()["queued"] == 3
    batch["exchanges"] = [
        {"conversation_id": "c", "id": "m3", "messages": [{"role": "user", "content": "I have 3 dogs"}]}
    ]
    held = httpx.post(f"{mnemo.url}/v1/imports/{created['id']}/exchanges", json=batch, timeout=10)
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert held.json()["error"]["code"] == "import_backpressure"
    shown = httpx.get(f"{mnemo.url}/v1/imports/{created['id']}", timeout=10).json()
    assert (shown["queued"], shown["status"]) == (3, "receiving")


def test_bad_import_requests_are_400s(gateways: Gateways) -> None:
    mnemo = gateways.get(**RAW)
    user = new_user("bad")
    assert httpx.post(f"{mnemo.url}/v1/imports", json={"user_id": user, "mode": "x"}).json()["error"]["param"] == "mode"
    created = httpx.post(f"{mnemo.url}/v1/imports", json={"user_id": user}).json()
    url = f"{mnemo.url}/v1/imports/{created['id']}/exchanges"
    cases = [
        ({"user_id": "someone-else", "exchanges": []}, "user_id"),
        ({"user_id": user, "exchanges": [{"id": "1", "messages": []}]}, "exchanges[0].conversation_id"),
        (
            {"user_id": user, "exchanges": [{"conversation_id": "c", "id": "1", "messages": []}]},
            "exchanges[0].messages",
        ),
        (
            {
                "user_id": user,
                "exchanges": [{"conversation_id": "c", "id": "1", "messages": [{"role": "user"}], "created_at": "x"}],
            },
            "exchanges[0].created_at",
        ),
        ({"user_id": user, "exchanges": [], "final": "yes"}, "final"),
    ]
    for body, param in cases:
        response = httpx.post(url, json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert httpx.get(f"{mnemo.url}/v1/imports/imp_unknown").status_code == 404


def test_an_import_is_its_tenants_alone(gateways: Gateways) -> None:
    admin, acme, umbrella = "admin-key-imports-000001", "acme-key-imports-0000001", "umbrella-key-imports-0001"
    tenants = [{"id": "acme", "keys": [acme]}, {"id": "umbrella", "keys": [umbrella]}]
    mnemo = gateways.get(**RAW, auth={"admin_keys": [admin], "tenants": tenants})
    user = new_user("tenant")
    created = httpx.post(f"{mnemo.url}/v1/imports", json={"user_id": user}, headers={"X-Mnemo-Api-Key": acme}).json()
    batch = {
        "user_id": user,
        "final": True,
        "exchanges": [
            {"conversation_id": "c", "id": "1", "messages": [{"role": "user", "content": "I am an acme user"}]}
        ],
    }
    url = f"{mnemo.url}/v1/imports/{created['id']}"
    assert httpx.post(url + "/exchanges", json=batch, headers={"X-Mnemo-Api-Key": umbrella}).status_code == 404
    assert httpx.get(url, headers={"X-Mnemo-Api-Key": umbrella}).status_code == 404
    assert httpx.post(url + "/exchanges", json=batch, headers={"X-Mnemo-Api-Key": acme}).status_code == 200
    assert httpx.get(url, headers={"X-Mnemo-Api-Key": admin}).status_code == 200
    assert httpx.get(url).status_code == 401
    wait_until(lambda: memories(mnemo, f"acme/{user}"))  # stored under the tenant's namespaced id
