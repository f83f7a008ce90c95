"""Non-OpenAI providers (Anthropic, Bedrock, Vertex, ...) through litellm, re-encoded in
OpenAI's wire format so clients cannot tell the difference."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.errors import map_upstream_errors
from gateway.upstream import Route, UpstreamStream
from mnemo.llm import import_litellm


def _litellm_arguments(route: Route, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    arguments = dict(body)
    arguments["model"] = f"{route.provider}/{route.provider_model}"
    if route.base_url:
        arguments["api_base"] = route.base_url
    key = route.api_key
    if key is None and headers.get("authorization", "").lower().startswith("bearer "):
        key = headers["authorization"][7:]
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
