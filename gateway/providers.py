"""Non-OpenAI providers (Anthropic, Bedrock, Vertex, ...) through litellm, re-encoded in
OpenAI's wire format so clients cannot tell the difference.

``litellm.acompletion`` takes a call's destination, credentials, headers, retries, callbacks and
loggers as keyword arguments beside the chat parameters, so a client's body is never spread into
it: only the fields in LITELLM_REQUEST_FIELDS pass, and model, provider, base URL and key are set
here from the route (configuration).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.errors import GatewayError, map_upstream_errors
from gateway.upstream import Route, UpstreamStream
from mnemo.llm import import_litellm

logger = logging.getLogger(__name__)

# The request fields that may reach litellm: OpenAI's chat parameters that litellm translates per
# provider (litellm 1.110's OPENAI_CHAT_COMPLETION_PARAMS), less every one that picks where the
# call goes or what it carries (api_base, base_url, api_key, api_version, organization,
# deployment_id, default_headers, extra_headers, timeout, request_timeout, max_retries) and
# litellm's own include_server_side_tool_invocations. Anything else in a body litellm would read
# as its own control (metadata, callbacks, mock_response, fallbacks, model_list, AWS/Vertex/Azure
# credentials, ...) or spread into the provider's request (extra_body), so it is dropped. Widening
# this list: check the name in litellm's acompletion and get_supported_openai_params first.
LITELLM_REQUEST_FIELDS = frozenset(
    {
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "user",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "thinking",
        "web_search_options",
        "service_tier",
        "store",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)
# How much of the dropped names a debug line shows: they are the client's strings, of any length.
LOGGED_NAMES = 20
LOGGED_NAME_CHARS = 40


def client_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body's allow-listed fields; the names of the others are logged, never their values."""
    kept = {name: value for name, value in body.items() if name in LITELLM_REQUEST_FIELDS}
    dropped = sorted(repr(name[:LOGGED_NAME_CHARS]) for name in body if name not in kept and name != "model")
    if dropped:
        more = f" (+{len(dropped) - LOGGED_NAMES} more)" if len(dropped) > LOGGED_NAMES else ""
        logger.debug("fields not passed to litellm: %s%s", ", ".join(dropped[:LOGGED_NAMES]), more)
    refuse_mcp_tools(kept.get("tools"))
    return kept


def refuse_mcp_tools(tools: Any) -> None:
    """An MCP tool names a server for litellm (its MCP gateway) or the provider to call: a
    destination chosen by the request, so it is refused rather than passed on."""
    if not isinstance(tools, list):
        return
    for index, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            raise GatewayError(
                400,
                f"tools[{index}] is of type `mcp`, which this gateway does not pass to the provider",
                param="tools",
                code="unsupported_tool_type",
            )


def _litellm_arguments(route: Route, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    arguments = client_fields(body)
    arguments["model"] = f"{route.provider}/{route.provider_model}"
    # The route's provider, whatever prefix a client's model name carries on a catch-all route.
    arguments["custom_llm_provider"] = route.provider
    if route.base_url:
        arguments["api_base"] = route.base_url
    key = route.api_key
    if key is None and headers.get("authorization", "").lower().startswith("bearer "):
        key = headers["authorization"][7:]  # sidecar pass-through: still to the configured base URL
    if key:
        arguments["api_key"] = key
    arguments["num_retries"] = 0
    return arguments


class LiteLLMStream:
    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with map_upstream_errors():
            async for chunk in self._chunks:
                yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


class LiteLLMUpstream:
    def __init__(self) -> None:
        self._litellm: Any = None

    def _module(self) -> Any:
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    async def complete(self, route: Route, body: dict[str, Any], headers: Mapping[str, str]) -> bytes:
        arguments = _litellm_arguments(route, {**body, "stream": False}, headers)
        async with map_upstream_errors():
            response = await self._module().acompletion(**arguments)
        return json.dumps(response.model_dump(exclude_none=True)).encode()

    async def stream(self, route: Route, body: dict[str, Any], headers: Mapping[str, str]) -> UpstreamStream:
        arguments = _litellm_arguments(route, {**body, "stream": True}, headers)
        async with map_upstream_errors():
            chunks = await self._module().acompletion(**arguments)
        return LiteLLMStream(chunks)
