"""Retention with a controllable clock (mnemo.retention.CLOCK): a memory is never injected,
searched, listed or shown once its expiry has passed, sweep or no sweep; the worker's sweep then
erases it from the store, its events and the disk, leaving an EXPIRE event without text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemo import retention
from mnemo.models import Scope, utcnow
from tests.conftest import wait_until
from tests.support.files import files_holding
from tests.support.probes import EAGER_MEMORY, Gateways, metric, new_user, wait_for_texts
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

# An hourly sweep never runs during a test: what these see is the read-time check alone.
NO_SWEEP = {"extraction": {"mode": "raw"}, "memory": EAGER_MEMORY}
POLICY = {"session_ttl": "1h", "sweep_interval_s": 3600}


@pytest.fixture(autouse=True)
def clock() -> Iterator[retention.Clock]:
    retention.CLOCK.offset = timedelta(0)
    yield retention.CLOCK
    retention.CLOCK.offset = timedelta(0)


def chat(mnemo: MnemoThread, user: str, text: str, **headers: str) -> httpx.Response:
    response = httpx.post(
        mnemo.url + "/v1/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]},
        headers={"X-Mnemo-User-Id": user, "Authorization": "Bearer sk-client", **headers},
        timeout=20,
    )
    return response


def injected(upstream: ScriptedUpstream) -> str:
    return upstream.of_task("chat")[-1].system_prompt


def one_memory(mnemo: MnemoThread, user: str, session: str | None = None) -> Any:
    memories = mnemo.call(lambda core: core.store.list(Scope(user_id=user, session_id=session)))
    assert len(memories) == 1
    return memories[0]


def at_moment(clock: retention.Clock, moment: datetime) -> None:
    clock.offset = moment - utcnow()


def test_a_session_memory_expires_after_its_ttl_and_is_not_injected_a_second_later(
    gateways: Gateways, clock: retention.Clock
) -> None:
    mnemo = gateways.get(**NO_SWEEP, retention=POLICY)
    upstream, user = gateways.upstream, new_user("ttl")
    assert chat(mnemo, user, "I keep an axolotl named Wobble", **{"X-Mnemo-Session-Id": "s1"}).status_code == 200
    assert chat(mnemo, user, "I keep a vegetable garden").status_code == 200  # user-level: no TTL
    wait_for_texts(mnemo, user, ["I keep a vegetable garden", "I keep an axolotl named Wobble"])
    session = one_memory(mnemo, user, "s1")
    assert session.expires_at == session.created_at + timedelta(hours=1)
    everything = mnemo.call(lambda core: core.store.list(Scope(user_id=user)))
    assert [m.expires_at for m in everything if m.session_id is None] == [None]
    listed = httpx.get(f"{mnemo.url}/v1/memories", params={"user_id": user, "session_id": "s1"}).json()["data"]
    assert datetime.fromisoformat(listed[0]["expires_at"]) == session.expires_at

    at_moment(clock, session.expires_at - timedelta(seconds=1))
    chat(mnemo, user, "What pets do I keep at home?", **{"X-Mnemo-Memory": "read"})
    assert "axolotl" in injected(upstream) and "garden" in injected(upstream)

    at_moment(clock, session.expires_at + timedelta(seconds=1))
    chat(mnemo, user, "What pets do I keep at home?", **{"X-Mnemo-Memory": "read"})
    assert "axolotl" not in injected(upstream) and "garden" in injected(upstream)
    found = httpx.post(f"{mnemo.url}/v1/memories/search", json={"query": "axolotl", "user_id": user}).json()
    assert [hit["text"] for hit in found["data"]] == ["I keep a vegetable garden"]
    assert httpx.get(f"{mnemo.url}/v1/memories/{session.id}").status_code == 404
    # History does not keep it either: as of a moment it was valid, it is gone all the same.
    as_of = (session.created_at + timedelta(minutes=1)).isoformat()
    old = httpx.get(f"{mnemo.url}/v1/memories", params={"user_id": user, "as_of": as_of}).json()["data"]
    assert [m["text"] for m in old] == ["I keep a vegetable garden"]
    export = httpx.get(f"{mnemo.url}/v1/users/{user}/export").json()
    assert [m["text"] for m in export["memories"]] == ["I keep a vegetable garden"]
    # Said again, it is new: the expired twin does not count as already known.
    chat(mnemo, user, "I keep an axolotl named Wobble")
    wait_until(lambda: len(mnemo.call(lambda core: core.store.list(Scope(user_id=user)))) == 2)


def test_the_sweep_erases_expired_memories_from_disk_and_leaves_an_expire_event(
    gateways: Gateways, clock: retention.Clock
) -> None:
    mnemo = gateways.get(fresh=True, extraction={"mode": "raw"}, retention={"sweep_interval_s": 1})
    user, secret = new_user("sweep"), "Quetzalwhistle"
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    made = httpx.post(
        f"{mnemo.url}/v1/memories",
        json={"user_id": user, "facts": [f"My password hint is {secret}"], "expires_at": soon},
    )
    assert made.status_code == 201, made.text
    kept = httpx.post(f"{mnemo.url}/v1/memories", json={"user_id": user, "facts": ["I like tea"]}).json()
    expiring = made.json()["data"][0]
    assert datetime.fromisoformat(expiring["expires_at"]) == datetime.fromisoformat(soon)
    assert kept["data"][0]["expires_at"] is None
    before = metric(mnemo, "mnemo_worker_memories_expired_total")

    clock.offset = timedelta(hours=2)

    def expired_event() -> Any:
        events = mnemo.call(lambda core: core.store.list_events(user))
        return [e for e in events if e.memory_id == expiring["id"] and e.action == "EXPIRE"]

    (event,) = wait_until(expired_event, timeout=20)
    assert event.old_text is None and event.new_text is None and event.actor == "worker"
    events = mnemo.call(lambda core: core.store.list_events(user))
    assert [e.action for e in events if e.memory_id == expiring["id"]] == ["EXPIRE"]  # the ADD, with its text, is gone
    assert [m.text for m in mnemo.call(lambda core: core.store.list(Scope(user_id=user)))] == ["I like tea"]
    mnemo.call(lambda core: core.store.wait_for_erasures())
    assert files_holding(Path(mnemo.settings.data_dir), secret) == []
    assert metric(mnemo, "mnemo_worker_memories_expired_total") == before + 1


def test_an_expiry_asked_for_is_kept_but_never_past_the_policy(gateways: Gateways) -> None:
    mnemo = gateways.get(**NO_SWEEP, retention=POLICY)
    user = new_user("asked")
    started = utcnow()
    chat(mnemo, user, "I am training for a marathon", **{"X-Mnemo-Expires-In": "30m", "X-Mnemo-Session-Id": "a"})
    chat(mnemo, user, "I am learning Portuguese", **{"X-Mnemo-Expires-In": "2h", "X-Mnemo-Session-Id": "b"})
    wait_for_texts(mnemo, user, ["I am learning Portuguese", "I am training for a marathon"])
    shorter, capped = one_memory(mnemo, user, "a"), one_memory(mnemo, user, "b")
    assert started + timedelta(minutes=30) <= shorter.expires_at < shorter.created_at + timedelta(minutes=30)
    assert capped.expires_at == capped.created_at + timedelta(hours=1)  # the session TTL, not 2 h
    bad = chat(mnemo, user, "hello", **{"X-Mnemo-Expires-In": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-mnemo-expires-in"


def test_patch_and_the_mem0_api_set_expiries(gateways: Gateways) -> None:
    mnemo = gateways.get(**NO_SWEEP)
    user = new_user("patch")
    memory = httpx.post(f"{mnemo.url}/v1/memories", json={"user_id": user, "facts": ["I own a kayak"]}).json()["data"][
        0
    ]
    later = (utcnow() + timedelta(days=3)).replace(microsecond=0)
    patched = httpx.patch(f"{mnemo.url}/v1/memories/{memory['id']}", json={"expires_at": later.isoformat()})
    assert patched.status_code == 200 and patched.json()["id"] == memory["id"]
    assert datetime.fromisoformat(httpx.get(f"{mnemo.url}/v1/memories/{memory['id']}").json()["expires_at"]) == later
    corrected = httpx.patch(f"{mnemo.url}/v1/memories/{memory['id']}", json={"text": "I own two kayaks"}).json()
    assert datetime.fromisoformat(corrected["expires_at"]) == later  # a correction keeps the expiry asked for
    past = httpx.patch(f"{mnemo.url}/v1/memories/{corrected['id']}", json={"expires_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.json()["error"]["param"] == "expires_at"
    added = httpx.post(
        f"{mnemo.url}/mem0/v3/memories/add/",
        json={
            "user_id": user,
            "messages": [{"role": "user", "content": "I sail"}],
            "infer": False,
            "expiration_date": "2099-12-31",
        },
    ).json()
    assert added["results"][0]["expiration_date"] == "2099-12-31"
