"""Mnemo driven through the official mem0ai SDK (MemoryClient, pinned in tests/mem0-requirements.txt)
exactly as a Mem0 user would: only the host changes. mem0ai cannot share .venv (it needs
protobuf<7), so it lives in tests/.mem0-venv, built here on first use, and runs in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mnemo.config import Settings
from mnemo.models import Scope
from tests.support.servers import MnemoThread

TESTS = Path(__file__).resolve().parent.parent
REQUIREMENTS = TESTS / "mem0-requirements.txt"
VENV = TESTS / ".mem0-venv"
DRIVER = TESTS / "support" / "mem0_driver.py"
TENANT_KEY = "tenant-key-acme-0123456789"


def mem0_python() -> Path:
    """The mem0 venv's python, (re)built when the pinned requirements change."""
    python = VENV / "bin" / "python"
    marker = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    done = subprocess.run([*install, "-r", str(REQUIREMENTS)], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, f"installing mem0ai failed:\n{done.stderr[-3000:]}"
    marker.write_text(wanted)
    return python


def drive(python: Path, host: str, key: str, user: str, other: str, home: Path) -> dict[str, Any]:
    env = {**os.environ, "MEM0_TELEMETRY": "False", "MEM0_DIR": str(home), "HOME": str(home)}
    done = subprocess.run(
        [str(python), str(DRIVER), host, key, user, other], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def texts(page: dict[str, Any]) -> list[str]:
    return sorted(m["memory"] for m in page["results"])


@pytest.mark.timeout(900)
def test_the_mem0_sdk_round_trips_every_method_against_mnemo_scoped_to_its_tenant(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    python = mem0_python()
    auth = {"tenants": [{"id": "acme", "keys": [TENANT_KEY]}], "admin_keys": ["admin-key-0123456789abcdef"]}
    mnemo = MnemoThread(make_settings(extraction="raw", auth=auth), worker=False).start()
    user, other = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    try:
        out = drive(python, mnemo.url + "/mem0", TENANT_KEY, user, other, tmp_path)
        stored = mnemo.call(lambda core: core.store.list(Scope(user_id=f"acme/{user}"), include_invalidated=True))
    finally:
        mnemo.stop()

    assert out["bad_key"]["raised"] == "ValueError"
    (added,) = out["add"]["results"]
    assert (added["memory"], added["event"], added["user_id"], added["metadata"]) == (
        "I live in Austin",
        "ADD",
        user,
        {"source": "mem0"},
    )
    assert out["add_agent"]["results"][0]["agent_id"] == "barista"
    assert out["add_infer"]["status"] == "PENDING" and out["add_infer"]["event_id"]
    # users(): the tenant's users, shown without the tenant's prefix (the queued exchange is not stored yet).
    assert [(u["name"], u["type"], u["total_memories"]) for u in out["users"]["results"]] == [
        (user, "user", 2),
        (other, "user", 1),
    ]
    assert texts(out["get_all"]) == ["I like green tea", "I live in Austin"] and out["get_all"]["count"] == 2
    assert texts(out["get_all_agent"]) == ["I like green tea"]
    paged = out["get_all_paged"]
    assert (len(paged["results"]), paged["count"], paged["next"] is not None, paged["previous"]) == (1, 2, True, None)
    assert out["search"]["results"][0]["memory"] == "I live in Austin" and "score" in out["search"]["results"][0]
    assert out["get"]["memory"] == "I live in Austin"
    assert out["update"]["memory"] == "I moved to Denver"
    assert out["get_after_update"]["memory"] == "I moved to Denver"  # the old id follows its versions
    history = out["history"]
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "I live in Austin"),
        ("UPDATE", "I live in Austin", "I moved to Denver"),
    ]
    assert out["delete"]["message"] and out["get_deleted"]["raised"] == "MemoryNotFoundError"
    assert out["delete_all_other_agent"]["deleted"] == 0
    assert texts(out["get_all_before_delete_all"]) == ["I moved to Denver"]
    assert out["delete_all_no_user"]["raised"] == "ValidationError"
    assert out["delete_all"]["deleted"] == 1
    assert out["get_all_after_delete_all"]["results"] == []
    assert texts(out["get_all_other"]) == ["I live in Oslo"]  # delete_all touched one scope only
    # Stored under the tenant's namespace, every version kept (invalidated) for history.
    assert {m.text for m in stored} == {"I live in Austin", "I moved to Denver", "I like green tea"}
    assert all(not m.is_valid for m in stored)
