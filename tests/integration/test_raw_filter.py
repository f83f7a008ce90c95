"""Raw mode through a running Mnemo remembers what the user states, not what they ask or small
talk; ``extraction.raw_filter: all`` keeps every message."""

from __future__ import annotations

from tests.conftest import wait_until
from tests.support.probes import (
    EAGER_MEMORY,
    Gateways,
    new_user,
    stored_texts,
    sync_client,
    wait_for_texts,
)
from tests.support.servers import MnemoThread

QUESTION_CHAT = ["What is my dog called?", "thanks!", "ok"]
FACT = "My dog is called Pixel"


def chat_then_state_a_fact(mnemo: MnemoThread, user: str) -> None:
    """Each question or small-talk line as its own chat, then a statement. A user's exchanges are
    applied in order, so once the statement is stored the chats before it have been applied too."""
    client = sync_client(mnemo, user)
    for text in [*QUESTION_CHAT, FACT]:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])


def test_a_question_only_chat_stores_nothing_in_raw_mode_while_a_statement_is_stored(gateways: Gateways) -> None:
    mnemo, user = gateways.get(extraction={"mode": "raw"}, memory=EAGER_MEMORY), new_user("asks")
    chat_then_state_a_fact(mnemo, user)
    wait_until(lambda: FACT in stored_texts(mnemo, user))
    assert stored_texts(mnemo, user) == [FACT]


def test_raw_filter_all_stores_every_message(gateways: Gateways) -> None:
    mnemo = gateways.get(extraction={"mode": "raw", "raw_filter": "all"}, memory=EAGER_MEMORY)
    user = new_user("keeps")
    chat_then_state_a_fact(mnemo, user)
    wait_for_texts(mnemo, user, sorted([*QUESTION_CHAT, FACT]))
