"""The operator CLI against a running Mnemo over its REST API: tables by default, the API's
JSON with --json, one-line errors, and the same through the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemo_cli.main import main
from tests.support.probes import Gateways, new_user
from tests.support.servers import MnemoThread, free_port

ADMIN_KEY = "admin-key-for-cli-tests-0001"


@pytest.fixture
def mnemo(gateways: Gateways) -> MnemoThread:
    """One Mnemo for the module's tests; each has its own users."""
    return gateways.get(extraction={"mode": "raw"})


def add_facts(mnemo: MnemoThread, user: str, *facts: str, headers: dict[str, str] | None = None) -> list[str]:
    response = httpx.post(
        mnemo.url + "/v1/memories", json={"user_id": user, "facts": list(facts)}, headers=headers, timeout=30
    )
    assert response.status_code == 201, response.text
    return [memory["id"] for memory in response.json()["data"]]


def cli(capsys: pytest.CaptureFixture[str], mnemo_url: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    command, action, *rest = argv
    code = main([command, action, "--url", mnemo_url, *rest])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], mnemo_url: str, *argv: str) -> Any:
    code, out, err = cli(capsys, mnemo_url, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_memories_list_search_show_history_and_delete_as_tables_and_json(
    mnemo: MnemoThread, capsys: pytest.CaptureFixture[str]
) -> None:
    ana = new_user("ana")
    austin, tacos = add_facts(mnemo, ana, "I live in Austin", "I love tacos al pastor")
    code, out, _ = cli(capsys, mnemo.url, "memories", "list", "--user", ana)
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split() == ["ID", "TEXT", "AGENT", "V", "CREATED", "STATE"]
    assert len(rows) == 2 and any(austin in row and "I live in Austin" in row and "current" in row for row in rows)
    # Both facts were added in one call with one timestamp, so their order is not defined.
    assert {m["id"] for m in cli_json(capsys, mnemo.url, "memories", "list", "--user", ana)["data"]} == {
        tacos,
        austin,
    }

    found = cli_json(capsys, mnemo.url, "memories", "search", "where does she live", "--user", ana, "--limit", "1")
    assert [hit["id"] for hit in found["data"]] == [austin] and found["data"][0]["score"] > 0
    code, out, _ = cli(capsys, mnemo.url, "memories", "search", "where does she live", "--user", ana)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["SCORE", "ID"]

    code, out, _ = cli(capsys, mnemo.url, "memories", "show", austin)
    assert code == 0 and f"id                 {austin}" in out and "I live in Austin" in out
    assert cli_json(capsys, mnemo.url, "memories", "show", austin)["text"] == "I live in Austin"

    code, out, _ = cli(capsys, mnemo.url, "memories", "delete", austin)
    assert (code, out.strip()) == (0, f"invalidated memory {austin}")
    history = cli_json(capsys, mnemo.url, "memories", "history", austin)
    assert [event["action"] for event in history["events"]] == ["ADD", "DELETE"]
    code, out, _ = cli(capsys, mnemo.url, "memories", "history", austin)
    assert code == 0 and "versions:" in out and "events:" in out and "DELETE" in out and "invalidated" in out
    listed = cli_json(capsys, mnemo.url, "memories", "list", "--user", ana, "--all")
    assert {m["id"] for m in listed["data"]} == {austin, tacos}

    code, _, err = cli(capsys, mnemo.url, "memories", "delete", tacos, "--hard")
    assert code == 1 and "--yes" in err
    assert cli_json(capsys, mnemo.url, "memories", "delete", tacos, "--hard", "--yes")["deleted"] == 1
    code, out, _ = cli(capsys, mnemo.url, "memories", "list", "--user", ana)
    assert (code, out.strip()) == (0, f"no memories for {ana}")


def test_users_export_and_delete(mnemo: MnemoThread, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bo = new_user("bo")
    add_facts(mnemo, bo, "I keep bees", "I live in Lisbon")
    code, out, _ = cli(capsys, mnemo.url, "users", "export", bo)
    assert code == 0 and "I keep bees" in out and out.strip().endswith(f"{bo}: 2 memories, 2 events")
    target = tmp_path / "bo.json"
    code, out, _ = cli(capsys, mnemo.url, "users", "export", bo, "--output", str(target))
    assert code == 0 and str(target) in out
    assert len(json.loads(target.read_text())["memories"]) == 2

    code, _, err = cli(capsys, mnemo.url, "users", "delete", bo)
    assert code == 1 and "add --yes" in err
    code, out, _ = cli(capsys, mnemo.url, "users", "delete", bo, "--yes")
    assert code == 0 and out.startswith(f"erased {bo}: 2 memories, 2 events")
    assert cli_json(capsys, mnemo.url, "users", "export", bo)["memories"] == []


def test_errors_are_one_line_with_the_api_message_and_exit_1(
    mnemo: MnemoThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, mnemo.url, "memories", "show", "mem_missing")
    assert (code, out) == (1, "")
    assert err.startswith("mnemo: HTTP 404: ") and "memory_not_found" in err and err.count("\n") == 1
    code, _, err = cli(capsys, mnemo.url, "memories", "list", "--user", "bad user!")
    assert code == 1 and "HTTP 400" in err and "param user_id" in err
    down = f"http://127.0.0.1:{free_port()}"
    code, _, err = cli(capsys, down, "memories", "list", "--user", "ana")
    assert (
        code == 1
        and err == f"mnemo: cannot connect to Mnemo at {down} (Connection refused); is it running? (--url, MNEMO_URL)\n"
    )


def test_the_installed_command_runs_in_a_subprocess(mnemo: MnemoThread) -> None:
    dee = new_user("dee")
    add_facts(mnemo, dee, "I ride a blue bike")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}, "MNEMO_URL": mnemo.url}
    command = [sys.executable, "-m", "mnemo_cli.main", "memories", "list", "--user", dee, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [m["text"] for m in json.loads(done.stdout)["data"]] == ["I ride a blue bike"]


def test_the_admin_key_comes_from_the_flag_or_the_environment(  # kept last: a Mnemo with keys of its own
    gateways: Gateways, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mnemo, cy = gateways.get(extraction={"mode": "raw"}, auth={"admin_keys": [ADMIN_KEY]}), new_user("cy")
    add_facts(mnemo, cy, "I play the cello", headers={"X-Mnemo-Api-Key": ADMIN_KEY})
    code, _, err = cli(capsys, mnemo.url, "memories", "list", "--user", cy)
    assert code == 1 and err.startswith("mnemo: HTTP 401: ")
    code, out, _ = cli(capsys, mnemo.url, "memories", "list", "--user", cy, "--api-key", ADMIN_KEY)
    assert code == 0 and "I play the cello" in out
    monkeypatch.setenv("MNEMO_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("MNEMO_URL", mnemo.url)
    capsys.readouterr()
    assert main(["memories", "list", "--user", cy]) == 0
    assert "I play the cello" in capsys.readouterr().out
