"""Real clients, unchanged, against `mnemo up`: each is used exactly as its documentation shows,
with only the base URL and the X-Mnemo-User-Id header changed. Each test checks that the streamed
reply arrives intact and that what the user said is injected into a later request (raw mode,
the embedded default, stores the user's message verbatim). The provider is the scripted upstream.

The Node clients (openai, Vercel AI SDK, Anthropic) run the scripts in tests/clients/, installed
with `npm ci` from the committed lock. The Responses API and Anthropic's Messages API are driven the
same way: the Vercel AI SDK's default provider, openai("model"), calls the Responses API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import wait_until
from tests.support.api_replies import SCRIPTED_RESPONSE_EVENT_TYPES
from tests.support.process import MnemoProcess
from tests.support.servers import ServerThread
from tests.support.upstream import ScriptedUpstream

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
MODEL = "gpt-4o-mini"
FACT = "My dog is called Pixel"
QUESTION = "What is my dog called?"


@pytest.fixture(scope="module")
def mnemo(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: tuple[ScriptedUpstream, ServerThread]
) -> Iterator[MnemoProcess]:
    """One `mnemo up` for the module (each test has its own users), with an Anthropic route too:
    claude-test, relayed to the scripted upstream's /v1/messages (an Anthropic base URL is the
    host root); every other model goes to the scripted upstream's OpenAI API."""
    root = upstream_server[1].url
    process = MnemoProcess(tmp_path_factory.mktemp("clients"), root + "/v1")
    config = yaml.safe_load(process.config.read_text())
    config["models"].insert(0, {"name": "claude-test", "provider": "anthropic", "base_url": root, "api_key": "sk-up"})
    process.config.write_text(yaml.safe_dump(config))
    yield process.start()
    process.kill()


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients with its node_modules installed from the lock (again only when the lock changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not on PATH: the Node client tests need Node 20+")
    lock = hashlib.sha256((CLIENTS / "package-lock.json").read_bytes()).hexdigest()
    stamp = CLIENTS / "node_modules" / ".mnemo-lock-sha256"
    if not stamp.is_file() or stamp.read_text() != lock:
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENTS, capture_output=True, text=True)
        assert done.returncode == 0, f"npm ci in {CLIENTS} failed:\n{done.stderr}"
        stamp.write_text(lock)
    return CLIENTS


def run_node(clients: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        ["node", *args], cwd=clients, capture_output=True, text=True, timeout=60, env={**_path_env(), **(env or {})}
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _path_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}


def remembered(mnemo: MnemoProcess, user: str, text: str = FACT) -> None:
    """Wait until the worker has stored the user's earlier message."""

    def stored() -> bool:
        page = httpx.get(f"{mnemo.base_url}/memories", params={"user_id": user}, timeout=5).json()
        return any(text in memory["text"] for memory in page["data"])

    wait_until(stored)


def injected(upstream: ScriptedUpstream) -> str:
    return upstream.of_task("chat")[-1].system_prompt


def assert_streamed(pieces: list[str], text: str) -> None:
    """The whole reply, in more than one piece (it streamed rather than arriving buffered)."""
    assert "".join(pieces) == text
    assert len([piece for piece in pieces if piece]) > 1


def test_openai_python_sync_streams_with_usage_and_mnemo_headers_show_the_injected_memory(
    mnemo: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    client = openai.OpenAI(base_url=mnemo.base_url, api_key="sk-client", default_headers={"X-Mnemo-User-Id": "ana"})
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": FACT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert_streamed([c.choices[0].delta.content or "" for c in chunks if c.choices], f"Echo: {FACT}")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    remembered(mnemo, "ana")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.parse().choices[0].message.content == f"Echo: {QUESTION}"
    assert raw.headers["X-Mnemo-Request-Id"].startswith("req_")
    assert raw.headers["X-Mnemo-Memories"] == "1" and raw.headers["X-Mnemo-Memory-Ids"]
    assert FACT in injected(upstream)


async def test_openai_python_async_streams_and_remembers(mnemo: MnemoProcess, upstream: ScriptedUpstream) -> None:
    client = openai.AsyncOpenAI(
        base_url=mnemo.base_url, api_key="sk-client", default_headers={"X-Mnemo-User-Id": "ben"}
    )
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": FACT}], stream=True
    )
    assert_streamed([chunk.choices[0].delta.content or "" async for chunk in stream], f"Echo: {FACT}")

    await _remembered_async(mnemo, "ben")
    reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    assert reply.choices[0].message.content == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)
    await client.close()


async def _remembered_async(mnemo: MnemoProcess, user: str) -> None:
    async with httpx.AsyncClient(base_url=mnemo.base_url, timeout=5) as http:
        for _ in range(400):
            page = (await http.get("/memories", params={"user_id": user})).json()
            if any(FACT in memory["text"] for memory in page["data"]):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{user}'s message was not stored")


def test_openai_python_tool_calls_stream_through_and_the_user_message_is_remembered(
    mnemo: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    client = openai.OpenAI(base_url=mnemo.base_url, api_key="sk-client", default_headers={"X-Mnemo-User-Id": "cy"})
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "find_vet",
                "description": "Find a vet for the user's pet",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            },
        }
    ]
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": FACT}], tools=tools, stream=True
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            name += (call.function and call.function.name) or ""
            arguments += (call.function and call.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("find_vet", {"query": FACT}, "tool_calls")

    remembered(mnemo, "cy")
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    assert FACT in injected(upstream)


class Reply(BaseModel):
    reply: str


def test_openai_python_json_mode_streams_valid_json_and_structured_outputs_parse(
    mnemo: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    client = openai.OpenAI(base_url=mnemo.base_url, api_key="sk-client", default_headers={"X-Mnemo-User-Id": "di"})
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": FACT}], response_format={"type": "json_object"}, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert json.loads(text) == {"reply": f"Echo: {FACT}"}

    remembered(mnemo, "di")
    parsed = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], response_format=Reply
    )
    assert parsed.choices[0].message.parsed == Reply(reply=f"Echo: {QUESTION}")
    assert FACT in injected(upstream)
    assert upstream.of_task("chat")[-1].body["response_format"]["type"] == "json_schema"


def test_langchain_chat_openai_streams_and_remembers(mnemo: MnemoProcess, upstream: ScriptedUpstream) -> None:
    llm = ChatOpenAI(
        model=MODEL,
        base_url=mnemo.base_url,
        api_key="sk-client",  # type: ignore[arg-type]
        default_headers={"X-Mnemo-User-Id": "eve"},
    )
    assert_streamed([str(chunk.content) for chunk in llm.stream(FACT)], f"Echo: {FACT}")

    remembered(mnemo, "eve")
    assert llm.invoke(QUESTION).content == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)


def curl_chat(mnemo: MnemoProcess, user: str, content: str, stream: bool) -> str:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream})
    command = ["curl", "-N", "-sS", "--fail-with-body", f"{mnemo.base_url}/chat/completions"]
    command += ["-H", "Content-Type: application/json", "-H", "Authorization: Bearer sk-client"]
    command += ["-H", f"X-Mnemo-User-Id: {user}", "-d", body]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not on PATH")
def test_curl_raw_sse_has_data_lines_and_done(mnemo: MnemoProcess, upstream: ScriptedUpstream) -> None:
    events = [line for line in curl_chat(mnemo, "fay", FACT, stream=True).split("\n\n") if line.strip()]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert_streamed([c["choices"][0]["delta"].get("content") or "" for c in chunks], f"Echo: {FACT}")

    remembered(mnemo, "fay")
    reply = json.loads(curl_chat(mnemo, "fay", QUESTION, stream=False))
    assert reply["choices"][0]["message"]["content"] == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)


def test_openai_node_sdk_streams_and_remembers(
    mnemo: MnemoProcess, upstream: ScriptedUpstream, node_clients: Path
) -> None:
    first = run_node(node_clients, "openai_stream.js", mnemo.base_url, "gus", FACT)
    assert_streamed(first["pieces"], f"Echo: {FACT}")

    remembered(mnemo, "gus")
    later = run_node(node_clients, "openai_stream.js", mnemo.base_url, "gus", QUESTION)
    assert "".join(later["pieces"]) == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)


def test_vercel_ai_sdk_stream_text_route_streams_and_remembers(
    mnemo: MnemoProcess, upstream: ScriptedUpstream, node_clients: Path
) -> None:
    env = {"MNEMO_BASE_URL": mnemo.base_url}
    first = run_node(node_clients, "ai_sdk_stream.js", "hal", FACT, env=env)
    assert first["status"] == 200
    assert_streamed(first["pieces"], f"Echo: {FACT}")
    assert upstream.of_task("chat")[-1].path == "/v1/chat/completions"

    remembered(mnemo, "hal")
    later = run_node(node_clients, "ai_sdk_stream.js", "hal", QUESTION, env=env)
    assert "".join(later["pieces"]) == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)


# --- the Responses API and Anthropic's Messages API -------------------------------------------


def test_vercel_ai_sdk_default_provider_streams_and_generates_through_the_responses_api_and_remembers(
    mnemo: MnemoProcess, upstream: ScriptedUpstream, node_clients: Path
) -> None:
    env = {"MNEMO_BASE_URL": mnemo.base_url}
    first = run_node(node_clients, "ai_sdk_responses.js", "stream", "ivy", FACT, env=env)
    assert_streamed(first["pieces"], f"Echo: {FACT}")
    assert upstream.of_task("chat")[-1].path == "/v1/responses"

    remembered(mnemo, "ivy")
    later = run_node(node_clients, "ai_sdk_responses.js", "generate", "ivy", QUESTION, env=env)
    assert later["pieces"] == [f"Echo: {QUESTION}"]
    assert upstream.of_task("chat")[-1].path == "/v1/responses"
    assert FACT in injected(upstream)


def test_openai_node_sdk_responses_stream_arrives_event_by_event_and_remembers(
    mnemo: MnemoProcess, upstream: ScriptedUpstream, node_clients: Path
) -> None:
    first = run_node(node_clients, "openai_responses.js", mnemo.base_url, "jay", FACT)
    assert first["types"] == SCRIPTED_RESPONSE_EVENT_TYPES
    assert_streamed(first["pieces"], f"Echo: {FACT}")

    remembered(mnemo, "jay")
    later = run_node(node_clients, "openai_responses.js", mnemo.base_url, "jay", QUESTION)
    assert "".join(later["pieces"]) == f"Echo: {QUESTION}"
    assert FACT in injected(upstream)


def test_anthropic_node_sdk_create_and_stream_remember_and_get_the_memory_in_system(
    mnemo: MnemoProcess, upstream: ScriptedUpstream, node_clients: Path
) -> None:
    root = mnemo.base_url.removesuffix("/v1")
    first = run_node(node_clients, "anthropic_messages.js", "stream", root, "kim", FACT)
    assert_streamed(first["pieces"], f"Echo: {FACT}")
    assert first["stop_reason"] == "end_turn"
    assert upstream.of_task("chat")[-1].path == "/v1/messages"

    remembered(mnemo, "kim")
    later = run_node(node_clients, "anthropic_messages.js", "create", root, "kim", QUESTION)
    assert later["pieces"] == [f"Echo: {QUESTION}"]
    assert FACT in injected(upstream)
    assert upstream.of_task("chat")[-1].headers["x-api-key"] == "sk-up"


def test_anthropic_python_sdk_create_and_stream_remember_and_other_users_see_nothing(
    mnemo: MnemoProcess, upstream: ScriptedUpstream
) -> None:
    root = mnemo.base_url.removesuffix("/v1")
    client = anthropic.Anthropic(base_url=root, api_key="sk-ant-client", default_headers={"X-Mnemo-User-Id": "lee"})
    messages: Any = [{"role": "user", "content": FACT}]
    with client.messages.stream(model="claude-test", max_tokens=256, messages=messages) as stream:
        assert_streamed(list(stream.text_stream), f"Echo: {FACT}")

    remembered(mnemo, "lee")
    question: Any = [{"role": "user", "content": QUESTION}]
    reply = client.messages.create(model="claude-test", max_tokens=256, messages=question)
    assert reply.content[0].text == f"Echo: {QUESTION}"  # type: ignore[union-attr]
    assert FACT in injected(upstream)
    other = client.messages.with_raw_response.create(
        model="claude-test", max_tokens=256, messages=question, extra_headers={"X-Mnemo-User-Id": "max"}
    )
    assert other.headers["X-Mnemo-Memories"] == "0" and FACT not in injected(upstream)
