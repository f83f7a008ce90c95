"""What the gateway hands litellm for a chat request: the client's allow-listed chat fields, and a
model, provider, base URL and key from the route only."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.errors import GatewayError
from gateway.providers import LITELLM_REQUEST_FIELDS, _litellm_arguments
from gateway.upstream import ModelTable, Route
from mnemo.config import ModelRoute

OPERATOR_KEY = "sk-operator-secret-0b5e"
BASE_URL = "http://anthropic.internal:8080"
ROUTE = Route("claude-x", "anthropic", "claude-test", BASE_URL, OPERATOR_KEY)
KEYLESS = Route("claude-env", "anthropic", "claude-test", None, None)
FROM_ROUTE = {"model", "custom_llm_provider", "api_base", "api_key", "num_retries"}

# litellm 1.110 keyword arguments (acompletion's signature and the names it reads from **kwargs)
# that choose a destination or credentials, add headers, reach callbacks and loggers, mock or
# reshape the call, or change timeouts, retries and costs.
LITELLM_CONTROLS = [
    "api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "organization", "deployment_id",
    "model_list", "fallbacks", "context_window_fallback_dict", "use_litellm_proxy", "litellm_params",
    "extra_headers", "headers", "default_headers", "provider_specific_header", "extra_body", "extra_query",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name", "aws_role_name",
    "aws_session_name", "aws_profile_name", "aws_web_identity_token", "aws_sts_endpoint",
    "aws_bedrock_runtime_endpoint", "vertex_project", "vertex_location", "vertex_credentials", "vertex_ai_project",
    "azure_ad_token", "azure_ad_token_provider", "azure_username", "azure_password", "client_id", "client_secret",
    "tenant_id", "litellm_credential_name", "ssl_verify", "client", "shared_session",
    "callbacks", "success_callback", "failure_callback", "input_callback", "service_callback", "logger_fn",
    "langsmith_base_url", "langfuse_host", "posthog_api_url", "metadata", "litellm_metadata",
    "proxy_server_request", "litellm_call_id", "litellm_trace_id", "litellm_session_id", "litellm_logging_obj",
    "no-log", "turn_off_message_logging", "tags", "guardrails", "prompt_id", "prompt_variables",
    "mock_response", "mock_timeout", "mock_tool_calls", "timeout", "request_timeout", "stream_timeout",
    "max_retries", "input_cost_per_token", "output_cost_per_token", "caching", "cache",
    "include_server_side_tool_invocations", "enable_json_schema_validation", "drop_params",
    "additional_drop_params", "allowed_openai_params", "user_continue_message", "assistant_continue_message",
    "mode",
]  # fmt: skip


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize("name", LITELLM_CONTROLS)
def test_a_litellm_control_in_the_body_never_reaches_litellm(name: str) -> None:
    for route in (ROUTE, KEYLESS):
        arguments = _litellm_arguments(route, body(**{name: "http://client.example"}), {})
        assert "http://client.example" not in arguments.values()
        assert set(arguments) <= LITELLM_REQUEST_FIELDS | FROM_ROUTE


def test_the_allow_list_names_no_litellm_control() -> None:
    # num_retries is not in LITELLM_CONTROLS above only because the gateway always set it.
    assert not LITELLM_REQUEST_FIELDS & {*LITELLM_CONTROLS, "num_retries"}


def test_exactly_the_allowed_chat_fields_pass_unchanged() -> None:
    fields = {name: f"value of {name}" for name in LITELLM_REQUEST_FIELDS - {"messages", "tools"}}
    controls = {name: f"value of {name}" for name in LITELLM_CONTROLS}
    arguments = _litellm_arguments(ROUTE, body(**fields, **controls), {})
    assert {name: value for name, value in arguments.items() if name not in FROM_ROUTE | {"messages"}} == fields
    assert arguments["messages"] == [{"role": "user", "content": "hi"}]


def test_destination_provider_and_key_come_from_the_route() -> None:
    arguments = _litellm_arguments(ROUTE, body(), {"authorization": "Bearer sk-client"})
    assert arguments["model"] == "anthropic/claude-test"
    assert arguments["custom_llm_provider"] == "anthropic"
    assert arguments["api_base"] == BASE_URL
    assert arguments["api_key"] == OPERATOR_KEY
    assert arguments["num_retries"] == 0


def test_without_a_configured_key_only_the_clients_bearer_is_forwarded() -> None:
    hostile = body(api_key="sk-body", api_base="http://client.example")
    with_bearer = _litellm_arguments(KEYLESS, hostile, {"authorization": "Bearer sk-client"})
    assert with_bearer["api_key"] == "sk-client" and "api_base" not in with_bearer
    without = _litellm_arguments(KEYLESS, hostile, {})
    assert "api_key" not in without and "api_base" not in without  # litellm's environment decides


@pytest.mark.parametrize("model", ["openai/gpt-4o", "hosted_vllm/x", "azure/gpt-4o", "litellm_proxy/x"])
def test_a_provider_prefix_in_the_clients_model_does_not_pick_the_provider(model: str) -> None:
    table = ModelTable(
        [ModelRoute(name="*", provider="anthropic", base_url=BASE_URL, api_key=SecretStr(OPERATOR_KEY))], {}
    )
    arguments = _litellm_arguments(table.resolve(model), body(model=model), {})
    assert arguments["custom_llm_provider"] == "anthropic"
    assert arguments["model"] == f"anthropic/{model}"


@pytest.mark.parametrize("server_url", ["litellm_proxy", "https://mcp.example/mcp/x"])
def test_an_mcp_tool_is_refused_with_a_400_and_function_tools_pass(server_url: str) -> None:
    function = {"type": "function", "function": {"name": "f", "parameters": {}}}
    assert _litellm_arguments(ROUTE, body(tools=[function]), {})["tools"] == [function]
    with pytest.raises(GatewayError) as raised:
        _litellm_arguments(ROUTE, body(tools=[function, {"type": "mcp", "server_url": server_url}]), {})
    assert raised.value.status == 400 and raised.value.param == "tools" and "tools[1]" in raised.value.message


def test_dropped_names_are_logged_at_debug_without_their_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.providers")
    _litellm_arguments(ROUTE, body(api_base="http://secret-host.example", metadata={"k": "secret-value"}), {})
    (record,) = [r for r in caplog.records if r.name == "gateway.providers"]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert "'api_base'" in message and "'metadata'" in message
    assert "secret-host" not in message and "secret-value" not in message


def test_the_dropped_names_line_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.providers")
    junk = {f"{index:03d}" + "x" * 5000: 1 for index in range(500)}
    _litellm_arguments(ROUTE, body(**junk), {})
    (record,) = [r for r in caplog.records if r.name == "gateway.providers"]
    message = record.getMessage()
    assert len(message) < 2000 and "(+480 more)" in message
