"""The core loop end to end: the real openai SDK → gateway → scripted upstream, the exchange
through real Redis/arq to the worker, facts into the real store, and back into the next prompt."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from mnemo.config import Settings
from mnemo.models import Scope
from tests.conftest import wait_until
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream


def moves_replace_homes(facts: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scripted decision model: 'I moved to X' updates the memory about where the user lives."""
    decisions = []
    for fact in facts:
        home = next((m for m in existing if "live in" in m["text"]), None)
        if "moved to" in fact["text"] and home is not None:
            decisions.append(
                {"fact": fact["index"], "action": "UPDATE", "id": home["id"], "text": fact["text"], "reason": "moved"}
            )
        else:
            decisions.append({"fact": fact["index"], "action": "ADD", "text": fact["text"], "reason": "new"})
    return decisions


@pytest.fixture(params=["edge", "qdrant"])
def mnemo(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[MnemoThread]:
    running = MnemoThread(make_settings(store=request.param)).start()
    yield running
    running.stop()


def client_for(mnemo: MnemoThread, user: str, session: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=mnemo.url + "/v1",
        api_key="sk-client",
        default_headers={"X-Mnemo-User-Id": user, "X-Mnemo-Session-Id": session},
        max_retries=0,
    )


def valid_texts(mnemo: MnemoThread, user: str) -> list[str]:
    memories = mnemo.call(lambda core: core.store.list(Scope(user_id=user)))
    return sorted(m.text for m in memories)


def test_facts_from_one_session_reach_the_next_session_and_move_on_with_the_user(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    upstream.decide = moves_replace_homes
    alice = client_for(mnemo, "alice", "s1")
    alice.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "I prefer TypeScript and I live in Austin"}]
    )
    wait_until(lambda: valid_texts(mnemo, "alice") == ["I live in Austin", "I prefer TypeScript"])

    upstream.requests.clear()
    later = client_for(mnemo, "alice", "s2")
    stream = later.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "Which programming language do I like, and which city do I live in?"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Echo:")
    seen = upstream.of_task("chat")[0].system_prompt
    assert "TypeScript" in seen and "Austin" in seen

    bob = client_for(mnemo, "bob", "s1")
    bob.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Which language should I use?"}]
    )
    assert "TypeScript" not in upstream.of_task("chat")[-1].system_prompt
    assert "Austin" not in str(upstream.of_task("chat")[-1].body)

    alice.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "I moved to Denver"}])
    wait_until(lambda: valid_texts(mnemo, "alice") == ["I moved to Denver", "I prefer TypeScript"])
    everything = mnemo.call(lambda core: core.store.list(Scope(user_id="alice"), include_invalidated=True))
    austin = next(m for m in everything if "Austin" in m.text)
    denver = next(m for m in everything if "Denver" in m.text)
    assert austin.invalid_at is not None and austin.superseded_by == denver.id and denver.supersedes == austin.id
    events = mnemo.call(lambda core: core.store.list_events("alice"))
    update = next(e for e in events if e.action == "UPDATE")
    assert (update.old_text, update.new_text, update.reason) == ("I live in Austin", "I moved to Denver", "moved")
    assert update.source_request_id == denver.source_request_id and update.model == "openai/scripted"

    upstream.requests.clear()
    later.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Where do I live these days?"}]
    )
    prompt = upstream.of_task("chat")[0].system_prompt
    assert "Denver" in prompt and "Austin" not in prompt
