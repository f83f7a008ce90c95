"""No field of a client's request chooses where a litellm call goes or which credentials it
carries: destination and key come from the model table (and, for extraction, from
ExtractionSettings) only.

Every test here has a capture server on 127.0.0.1 that a hijacked request would reach; it must
receive nothing. The capture server answers with an error that echoes the headers it received,
so a hijacked call would also bring the operator's key back in the gateway's response. A spy on
``litellm.acompletion`` shows which keyword arguments litellm was handed at all.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mnemo.llm import import_litellm
from tests.conftest import wait_until
from tests.support.probes import LITELLM_READONLY_WARNING, Gateways, new_user, wait_for_texts
from tests.support.servers import MnemoThread, ServerThread
from tests.support.upstream import ScriptedUpstream

pytestmark = LITELLM_READONLY_WARNING

OPERATOR_KEY = "sk-operator-secret-4f1d8a2c9e"
CLIENT_KEY = "sk-client-own-key-77"
ANTHROPIC_MODEL = "claude-test"
# What litellm is handed besides the client's allowed fields: all of it set from configuration.
CONFIGURED_ARGUMENTS = {"model", "messages", "api_base", "api_key", "custom_llm_provider", "num_retries"}
INJECTED_HEADER = "x-injected-by-client"
# The OpenAI chat parameters a client may send on a litellm route (kept here rather than imported
# from gateway.providers, so that widening the gateway's list has to be argued here too).
CLIENT_FIELDS = {
    "messages", "model", "stream", "stream_options", "temperature", "top_p", "n", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "seed", "user", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "modalities", "audio", "prediction", "reasoning_effort", "verbosity", "thinking",
    "web_search_options", "service_tier", "store", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier",
}  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    """Every request a server received, whatever its path or method."""

    requests: list[Seen] = field(default_factory=list)

    async def record(self, request: Request) -> Seen:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        seen = Seen(request.method, request.url.path, dict(request.headers), body)
        self.requests.append(seen)
        return seen


@dataclass
class Capture(Recorder):
    """Where a hijacked request would land: it answers with an error echoing what it was sent,
    as an attacker's server would, so a leak would show in the gateway's response too."""

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])

    async def handle(self, request: Request) -> Response:
        seen = await self.record(request)
        echoed = json.dumps({"path": seen.path, "headers": seen.headers})
        return JSONResponse({"error": {"message": f"capture saw {echoed}", "type": "captured"}}, status_code=400)


@dataclass
class AnthropicUpstream(Recorder):
    """Just enough of Anthropic's Messages API for litellm: an echo of the last user text, whole
    or as Anthropic's server-sent events."""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.messages, methods=["POST"])])

    async def messages(self, request: Request) -> Response:
        seen = await self.record(request)
        if not seen.path.endswith("/messages"):
            return JSONResponse({"type": "error", "error": {"type": "not_found_error", "message": "nope"}}, 404)
        text = "Echo: " + last_user_text(seen.body)
        if seen.body.get("stream"):
            return StreamingResponse(anthropic_events(text), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": seen.body.get("model"),
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 3},
            }
        )


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


async def anthropic_events(text: str) -> AsyncIterator[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    message = {"id": "msg_test", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL, "content": []}
    usage = {"input_tokens": 10, "output_tokens": 1}
    yield event("message_start", {"message": {**message, "stop_reason": None, "usage": usage}})
    yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for start in range(0, len(text), 5):
        yield event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text[start : start + 5]}}
        )
    yield event("content_block_stop", {"index": 0})
    yield event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage})
    yield event("message_stop", {})


@pytest.fixture(scope="module")
def capture() -> Iterator[tuple[Capture, str]]:
    recorder = Capture()
    server = ServerThread(recorder.app()).start()
    yield recorder, server.url
    server.stop()


@pytest.fixture(scope="module")
def anthropic() -> Iterator[tuple[AnthropicUpstream, str]]:
    recorder = AnthropicUpstream()
    server = ServerThread(recorder.app()).start()
    yield recorder, server.url
    server.stop()


@dataclass
class Spy:
    """The keyword arguments of every litellm.acompletion call made while a test runs."""

    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    litellm = import_litellm()
    original = litellm.acompletion
    seen = Spy()

    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        seen.calls.append(dict(kwargs))
        return await original(*args, **kwargs)

    monkeypatch.setattr(litellm, "acompletion", acompletion)
    return seen


@dataclass
class World:
    mnemo: MnemoThread
    capture: Capture
    capture_url: str
    anthropic: AnthropicUpstream
    upstream: ScriptedUpstream

    def clear(self) -> None:
        self.capture.requests.clear()
        self.anthropic.requests.clear()
        self.upstream.requests.clear()


@pytest.fixture
def world(
    gateways: Gateways,
    capture: tuple[Capture, str],
    anthropic: tuple[AnthropicUpstream, str],
    upstream: ScriptedUpstream,
    upstream_url: str,
) -> World:
    (capture_recorder, capture_url), (anthropic_recorder, anthropic_url) = capture, anthropic
    models = [
        {"name": "claude-x", "provider": "anthropic", "model": ANTHROPIC_MODEL, "base_url": anthropic_url,
         "api_key": OPERATOR_KEY},
        # Configured as most Anthropic users do: base URL and key from litellm's environment variables.
        {"name": "claude-env", "provider": "anthropic", "model": ANTHROPIC_MODEL},
        {"name": "vllm-x", "provider": "hosted_vllm", "model": "scripted", "base_url": upstream_url,
         "api_key": OPERATOR_KEY},
        {"name": "keyless-x", "provider": "hosted_vllm", "model": "scripted", "base_url": upstream_url},
        {"name": "direct-x", "provider": "openai", "model": "scripted", "base_url": upstream_url,
         "api_key": OPERATOR_KEY},
        {"name": "*", "provider": "anthropic", "base_url": anthropic_url, "api_key": OPERATOR_KEY},
    ]  # fmt: skip
    mnemo = gateways.get(extraction={"mode": "raw"}, models=models)
    built = World(mnemo, capture_recorder, capture_url, anthropic_recorder, upstream)
    built.clear()
    return built


def chat(
    mnemo: MnemoThread, body: dict[str, Any], *, api_key: str | None = CLIENT_KEY, user: str | None = None
) -> httpx.Response:
    """One chat request, read to its end (streamed or not), with memory off unless a user is named."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    headers.update({"x-mnemo-user-id": user} if user else {"x-mnemo-memory": "off"})
    with httpx.Client(timeout=30) as client:
        response = client.post(mnemo.url + "/v1/chat/completions", json=body, headers=headers)
        response.read()
        return response


def reply_of(response: httpx.Response) -> str:
    """The assistant's text, from a JSON completion or from an SSE stream of chunks."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = ""
        for line in response.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
        return text
    return str(response.json()["choices"][0]["message"]["content"])


def hostile_value(name: str, capture_url: str) -> Any:
    """A value that, were litellm to honour the field, would send the call (or its key, or its
    logs) to the capture server, or change what is sent."""
    headers = {INJECTED_HEADER: "1", "authorization": "Bearer sk-from-client", "x-api-key": "sk-from-client"}
    values: dict[str, Any] = {
        "api_key": "sk-from-client",
        "api_version": "2024-02-01",
        "custom_llm_provider": "openai",
        "organization": "org-from-client",
        "deployment_id": "hijack",
        "extra_headers": headers,
        "headers": headers,
        "default_headers": headers,
        "provider_specific_header": {"custom_llm_provider": "anthropic", "extra_headers": headers},
        "extra_body": {"api_base": capture_url, "base_url": capture_url},
        "litellm_params": {"api_base": capture_url, "api_key": "sk-from-client"},
        "metadata": {"api_base": capture_url, "headers": headers, "tags": ["from-client"]},
        "litellm_metadata": {"api_base": capture_url, "headers": headers},
        "proxy_server_request": {"url": capture_url, "headers": headers, "body": {}},
        "model_list": [{"model_name": "claude-x", "litellm_params": {"model": "openai/x", "api_base": capture_url}}],
        "fallbacks": [{"model": "openai/x", "api_base": capture_url, "api_key": "sk-from-client"}],
        "context_window_fallback_dict": {ANTHROPIC_MODEL: "openai/x"},
        "callbacks": ["langsmith"],
        "success_callback": ["langsmith"],
        "failure_callback": ["langsmith"],
        "input_callback": ["langsmith"],
        "service_callback": ["langsmith"],
        "logger_fn": "print",
        "mock_response": "mocked by the client",
        "mock_timeout": True,
        "mock_tool_calls": [{"id": "x", "type": "function", "function": {"name": "x", "arguments": "{}"}}],
        "timeout": 0.000001,
        "request_timeout": 0.000001,
        "stream_timeout": 0.000001,
        "num_retries": 7,
        "max_retries": 7,
        "input_cost_per_token": 1000.0,
        "output_cost_per_token": 1000.0,
        "ssl_verify": False,
        "use_litellm_proxy": True,
        "caching": True,
        "no-log": True,
        "turn_off_message_logging": True,
        "aws_region_name": "us-east-1",
        "vertex_credentials": "{}",
        "include_server_side_tool_invocations": True,
        "mode": "responses",
    }
    return values.get(name, capture_url)


# Named fields, each of which litellm 1.110 would act on: a destination, a credential, headers,
# callbacks or loggers, metadata that reaches them, mocks, timeouts and retries, costs, models.
# (num_retries is not among them: the gateway always sets it; the all-at-once test sends it.)
NAMED_FIELDS = [
    "api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "organization", "deployment_id",
    "extra_headers", "headers", "default_headers", "provider_specific_header", "extra_body", "litellm_params",
    "model_list", "fallbacks", "context_window_fallback_dict", "use_litellm_proxy", "ssl_verify", "mode",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name", "aws_role_name",
    "aws_session_name", "aws_profile_name", "aws_web_identity_token", "aws_sts_endpoint",
    "aws_bedrock_runtime_endpoint", "vertex_project", "vertex_location", "vertex_credentials",
    "azure_ad_token", "azure_ad_token_provider", "azure_username", "azure_password", "client_id",
    "client_secret", "tenant_id", "github_copilot_host", "token_exchange_endpoint", "anthropic_issuer_url",
    "anthropic_keycloak_token_url", "s3_endpoint_url", "litellm_credential_name",
    "callbacks", "success_callback", "failure_callback", "input_callback", "service_callback", "logger_fn",
    "langsmith_base_url", "langsmith_api_key", "langfuse_host", "langfuse_secret_key", "posthog_api_url",
    "dd_agent_host", "signoz_ingestion_endpoint", "metadata", "litellm_metadata", "proxy_server_request",
    "litellm_call_id", "litellm_trace_id", "litellm_session_id", "litellm_logging_obj", "no-log",
    "turn_off_message_logging", "tags", "guardrails", "prompt_id", "mock_response", "mock_timeout",
    "mock_tool_calls", "timeout", "request_timeout", "stream_timeout", "max_retries",
    "input_cost_per_token", "output_cost_per_token", "caching", "cache", "include_server_side_tool_invocations",
]  # fmt: skip


def litellm_keyword_arguments() -> set[str]:
    """Every keyword litellm's acompletion names or reads from its kwargs, from litellm itself."""
    import_litellm()
    from litellm import main
    from litellm.types.utils import all_litellm_params

    signature = set(inspect.signature(main.acompletion).parameters) - {"kwargs"}
    return signature | set(all_litellm_params) | set(NAMED_FIELDS)


def assert_confined(world: World, response: httpx.Response, spy: Spy) -> None:
    """The call reached only the configured upstream, and nothing of the operator's key came back."""
    assert world.capture.requests == []
    assert OPERATOR_KEY not in response.text
    assert response.status_code == 200, response.text
    assert reply_of(response).startswith("Echo: ")
    for call in spy.calls:
        stray = set(call) - CLIENT_FIELDS - CONFIGURED_ARGUMENTS
        assert not stray, f"litellm was handed {sorted(stray)}"


def assert_reached_anthropic(world: World, key: str = OPERATOR_KEY) -> None:
    (seen,) = world.anthropic.requests
    assert seen.headers.get("x-api-key") == key
    assert INJECTED_HEADER not in seen.headers
    assert seen.body["model"] == ANTHROPIC_MODEL


@pytest.fixture
def anthropic_environment(anthropic: tuple[AnthropicUpstream, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's Anthropic base URL and key, where litellm looks for them by default."""
    monkeypatch.setenv("ANTHROPIC_API_BASE", anthropic[1])
    monkeypatch.setenv("ANTHROPIC_API_KEY", OPERATOR_KEY)


@pytest.mark.usefixtures("anthropic_environment")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", NAMED_FIELDS)
def test_a_client_field_cannot_redirect_or_rekey_a_litellm_route(
    world: World, spy: Spy, name: str, stream: bool
) -> None:
    """The route names neither base URL nor key (litellm takes both from the environment) and
    the client sends no Authorization: nothing in the body may fill either gap."""
    body = {
        "model": "claude-env",
        "messages": [{"role": "user", "content": f"field {name}"}],
        "stream": stream,
        name: hostile_value(name, world.capture_url),
    }
    response = chat(world.mnemo, body, api_key=None)
    assert_confined(world, response, spy)
    assert reply_of(response) == f"Echo: field {name}"
    assert_reached_anthropic(world)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("route", ["claude-x", "vllm-x"])
def test_every_litellm_keyword_at_once_is_dropped(world: World, spy: Spy, route: str, stream: bool) -> None:
    names = litellm_keyword_arguments() - CLIENT_FIELDS
    body = {name: hostile_value(name, world.capture_url) for name in names}
    body.update({"model": route, "messages": [{"role": "user", "content": "all at once"}], "stream": stream})
    response = chat(world.mnemo, body)
    assert_confined(world, response, spy)
    assert reply_of(response) == "Echo: all at once"
    if route == "claude-x":
        assert_reached_anthropic(world)
    else:
        (seen,) = world.upstream.requests
        assert seen.headers["authorization"] == f"Bearer {OPERATOR_KEY}"
        assert INJECTED_HEADER not in seen.headers
        assert seen.body["model"] == "scripted"
        assert not set(seen.body) & names
    assert len(spy.calls) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_without_a_configured_key_the_clients_own_bearer_goes_to_the_configured_base_url(
    world: World, spy: Spy, stream: bool
) -> None:
    body = {
        "model": "keyless-x",
        "messages": [{"role": "user", "content": "keyless"}],
        "stream": stream,
        "api_base": world.capture_url,
        "base_url": world.capture_url,
        "api_key": "sk-from-body",
        "extra_headers": {"authorization": "Bearer sk-from-body", INJECTED_HEADER: "1"},
    }
    response = chat(world.mnemo, body, api_key=CLIENT_KEY)
    assert_confined(world, response, spy)
    (seen,) = world.upstream.requests
    assert seen.headers["authorization"] == f"Bearer {CLIENT_KEY}"
    assert INJECTED_HEADER not in seen.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", ["openai/gpt-4o", "hosted_vllm/scripted", "azure/gpt-4o", "litellm_proxy/x"])
def test_a_provider_prefix_in_the_clients_model_does_not_change_the_routes_provider(
    world: World, spy: Spy, model: str, stream: bool
) -> None:
    """The catch-all route is Anthropic's: whatever the client's model name says, Anthropic's
    API at the configured base URL gets the call, with the configured key."""
    body = {"model": model, "messages": [{"role": "user", "content": "prefixed"}], "stream": stream}
    response = chat(world.mnemo, body)
    assert_confined(world, response, spy)
    (seen,) = world.anthropic.requests
    assert seen.headers.get("x-api-key") == OPERATOR_KEY
    assert seen.body["model"] == model
    assert world.upstream.requests == []
    assert [call["custom_llm_provider"] for call in spy.calls] == ["anthropic"]


@pytest.mark.parametrize("server_url", ["litellm_proxy", "capture"])
def test_an_mcp_tool_is_refused_on_a_litellm_route(world: World, spy: Spy, server_url: str) -> None:
    """An MCP tool names a server for litellm (or the provider) to call: a destination chosen by
    the request. It is refused with a 400 before litellm sees it."""
    url = world.capture_url + "/mcp/x" if server_url == "capture" else server_url
    tool = {"type": "mcp", "server_label": "x", "server_url": url, "require_approval": "never"}
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "use the tool"}], "tools": [tool]}
    response = chat(world.mnemo, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "tools" and "mcp" in error["message"]
    assert world.capture.requests == [] and world.anthropic.requests == [] and spy.calls == []


def test_an_image_url_on_a_private_address_is_not_fetched_by_the_gateway(world: World, spy: Spy) -> None:
    """litellm downloads http image URLs for Anthropic; its own SSRF guard (on by default) keeps
    it off private addresses, so the gateway is no proxy into its network."""
    image = {"type": "image_url", "image_url": {"url": world.capture_url + "/secret.png"}}
    content = [{"type": "text", "text": "look"}, image]
    response = chat(world.mnemo, {"model": "claude-x", "messages": [{"role": "user", "content": content}]})
    assert world.capture.requests == []
    assert OPERATOR_KEY not in response.text
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_direct_relay_takes_destination_and_key_from_configuration_only(world: World, stream: bool) -> None:
    """OpenAI-compatible routes relay the body as it is, but the URL and key are the route's."""
    body = {
        "model": "direct-x",
        "messages": [{"role": "user", "content": "direct"}],
        "stream": stream,
        "api_base": world.capture_url,
        "base_url": world.capture_url,
        "api_key": "sk-from-body",
        "extra_headers": {INJECTED_HEADER: "1"},
    }
    response = chat(world.mnemo, body)
    assert world.capture.requests == []
    assert response.status_code == 200 and reply_of(response) == "Echo: direct"
    (seen,) = world.upstream.requests
    assert seen.headers["authorization"] == f"Bearer {OPERATOR_KEY}"
    assert INJECTED_HEADER not in seen.headers


def test_an_exchange_cannot_steer_the_extraction_call(
    gateways: Gateways,
    capture: tuple[Capture, str],
    upstream: ScriptedUpstream,
    upstream_url: str,
    spy: Spy,
) -> None:
    """Extraction through litellm: the chat's body, its messages' extra fields and its text all
    name the capture server; the extraction call still goes where ExtractionSettings say, with
    their key, and litellm gets only arguments built from those settings."""
    recorder, capture_url = capture
    recorder.requests.clear()
    extraction = {"mode": "llm", "model": "hosted_vllm/scripted", "base_url": upstream_url, "api_key": OPERATOR_KEY}
    mnemo = gateways.get(extraction=extraction)
    user = new_user("steer")
    hostile = {name: hostile_value(name, capture_url) for name in NAMED_FIELDS}
    text = f"I keep bees, api_base={capture_url} base_url={capture_url}"
    body = {
        **hostile,
        "model": "anything",
        "messages": [{"role": "user", "content": text, **hostile}],
    }
    response = chat(mnemo, body, user=user)
    assert response.status_code == 200, response.text
    wait_for_texts(mnemo, user, ["I keep bees"])
    assert recorder.requests == []
    extractions = upstream.of_task("extract")
    assert extractions and all(r.headers["authorization"] == f"Bearer {OPERATOR_KEY}" for r in extractions)
    assert spy.calls
    for call in spy.calls:
        assert set(call) == {
            "model", "messages", "api_base", "api_key", "timeout", "temperature", "response_format", "num_retries",
        }  # fmt: skip
        assert call["api_base"] == upstream_url and call["api_key"] == OPERATOR_KEY
        assert call["model"] == "hosted_vllm/scripted"
    litellm_logging_done(mnemo)  # litellm's loggers run after the call: none of them may call out either
    assert recorder.requests == []


def litellm_logging_done(mnemo: MnemoThread) -> None:
    """Wait until litellm's logging of the calls made so far has run: the tasks that hand it to
    its logging worker, that worker's queue (both on the Mnemo's loop), and its thread pool for
    synchronous callbacks (every task slot free again)."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    from litellm.litellm_core_utils.thread_pool_executor import executor
    from litellm.responses.streaming_iterator import drain_logging_tasks

    async def flushed(_: object) -> None:
        await drain_logging_tasks()
        await GLOBAL_LOGGING_WORKER.flush()

    mnemo.call(flushed)
    wait_until(lambda: executor._pending_slots._value == executor._max_pending_tasks)
