"""Drives Mnemo through the official mem0ai SDK, exactly as a Mem0 user would. Run with the
python of tests/.mem0-venv (mem0ai is not installed in .venv):

    python mem0_driver.py <host> <api_key> <user_id> <other_user_id>

Prints one JSON object: what each SDK call returned (or the exception it raised)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from mem0 import MemoryClient


def attempt(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc)[:300]}


def run(host: str, api_key: str, user: str, other: str) -> dict[str, Any]:
    out: dict[str, Any] = {"bad_key": attempt(lambda: MemoryClient(api_key="wrong-key-0123456789", host=host))}
    client = MemoryClient(api_key=api_key, host=host)
    out["add"] = client.add(
        [{"role": "user", "content": "I live in Austin"}], user_id=user, infer=False, metadata={"source": "mem0"}
    )
    out["add_agent"] = client.add("I like green tea", user_id=user, agent_id="barista", infer=False)
    out["add_other"] = client.add("I live in Oslo", user_id=other, infer=False)
    out["add_infer"] = client.add("My dog is called Rex", user_id=other)
    out["users"] = client.users()
    out["get_all"] = client.get_all(filters={"user_id": user})
    out["get_all_agent"] = client.get_all(filters={"AND": [{"user_id": user}, {"agent_id": "barista"}]})
    out["get_all_paged"] = client.get_all(filters={"user_id": user}, page=1, page_size=1)
    out["search"] = client.search("Where does the user live?", filters={"user_id": user}, top_k=5)
    home = out["add"]["results"][0]["id"]
    tea = out["add_agent"]["results"][0]["id"]
    out["get"] = client.get(home)
    out["update"] = client.update(home, text="I moved to Denver")
    out["get_after_update"] = client.get(home)
    out["history"] = client.history(home)
    out["delete"] = client.delete(tea)
    out["get_deleted"] = attempt(lambda: client.get(tea))
    out["delete_all_other_agent"] = client.delete_all(user_id=user, agent_id="nobody")
    out["get_all_before_delete_all"] = client.get_all(filters={"user_id": user})
    out["delete_all_no_user"] = attempt(lambda: client.delete_all(agent_id="barista"))
    out["delete_all"] = client.delete_all(user_id=user)
    out["get_all_after_delete_all"] = client.get_all(filters={"user_id": user})
    out["get_all_other"] = client.get_all(filters={"user_id": other})
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run(*sys.argv[1:5]), default=str) + "\n")
