"""The extraction LLM, asked for JSON, with provider errors sorted into transient (retry the
job later) and permanent ones.

``openai/...`` models (OpenAI or any OpenAI-compatible API) are called straight through httpx,
like the gateway's fast path: litellm costs about 6 ms of CPU per call against an instant
upstream (bench/worker), paid on the worker's event loop, which ``mnemo up`` shares with the
gateway. Every other provider goes through litellm, imported lazily: the import costs seconds and,
without LITELLM_LOCAL_MODEL_COST_MAP, tries to fetch a price list from the internet.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from mnemo.config import ExtractionSettings
from mnemo.errors import ExtractionError, TransientExtractionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class JsonLLM(Protocol):
    model: str

    async def complete(self, system: str, user: str) -> Completion: ...

    async def aclose(self) -> None: ...


OPENAI_PREFIX = "openai/"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Statuses worth retrying the job for: the provider is busy, overloaded or timed out.
TRANSIENT_STATUSES = frozenset({408, 429})


def uses_litellm(settings: ExtractionSettings) -> bool:
    """Whether extraction goes through litellm: an extraction model of another provider than openai/."""
    return bool(settings.model) and not (settings.model or "").startswith(OPENAI_PREFIX)


def build_llm(settings: ExtractionSettings) -> JsonLLM:
    return LiteLLMClient(settings) if uses_litellm(settings) else OpenAICompatibleLLM(settings)


def _api_key(settings: ExtractionSettings, default_env: str | None = None) -> str | None:
    if settings.api_key:
        return settings.api_key.get_secret_value()
    for name in (settings.api_key_env, default_env):
        if name and os.environ.get(name):
            return os.environ[name]
    return None


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


async def stop_litellm_background() -> None:
    """litellm runs a logging task on the event loop once used; stop it before the loop ends."""
    if "litellm" not in sys.modules:
        return
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    try:
        await GLOBAL_LOGGING_WORKER.stop(discard_pending=True, timeout=2)
    except RuntimeError as exc:  # its queue belongs to another event loop (several apps in one process)
        logger.debug("litellm logging worker not stopped: %s", exc)


class OpenAICompatibleLLM:
    """POST /chat/completions on an OpenAI-compatible API, JSON mode, temperature 0.

    Without a configured key, OPENAI_API_KEY is used, as litellm (and the openai SDK) would.
    """

    def __init__(self, settings: ExtractionSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not settings.model:
            raise ExtractionError("extraction.mode=llm needs extraction.model")
        self.model = settings.model
        self._provider_model = settings.model.removeprefix(OPENAI_PREFIX)
        key = _api_key(settings, "OPENAI_API_KEY")
        self._client = httpx.AsyncClient(
            base_url=(settings.base_url or OPENAI_BASE_URL).rstrip("/"),
            headers={"authorization": f"Bearer {key}"} if key else {},
            timeout=settings.timeout_s,
            transport=transport,
        )

    async def complete(self, system: str, user: str) -> Completion:
        body = {
            "model": self._provider_model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        try:
            response = await self._client.post("/chat/completions", json=body)
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts alike
            raise TransientExtractionError(f"extraction LLM unavailable: {type(exc).__name__}") from exc
        if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
            raise TransientExtractionError(f"extraction LLM unavailable: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ExtractionError(
                f"extraction LLM failed: HTTP {response.status_code}: {_error_message(response.content)}"
            )
        return _parse_completion(response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(content: bytes) -> str:
    try:
        message = json.loads(content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return content[:200].decode(errors="replace")
    return str(message)


def _parse_completion(content: bytes) -> Completion:
    try:
        data = json.loads(content)
        text = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ExtractionError(f"extraction LLM answered without a chat completion: {content[:200]!r}") from exc
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=str(text),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


class LiteLLMClient:
    def __init__(self, settings: ExtractionSettings) -> None:
        if not settings.model:
            raise ExtractionError("extraction.mode=llm needs extraction.model")
        self.model = settings.model
        self._base_url = settings.base_url
        self._timeout = settings.timeout_s
        self._api_key = _api_key(settings)
        self._litellm = import_litellm()

    async def complete(self, system: str, user: str) -> Completion:
        litellm = self._litellm
        try:
            response = await litellm.acompletion(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                api_base=self._base_url,
                api_key=self._api_key,
                timeout=self._timeout,
                temperature=0,
                response_format={"type": "json_object"},
                num_retries=0,
            )
        except (
            litellm.RateLimitError,
            litellm.APIConnectionError,
            litellm.Timeout,
            litellm.ServiceUnavailableError,
            litellm.InternalServerError,
        ) as exc:
            raise TransientExtractionError(f"extraction LLM unavailable: {type(exc).__name__}") from exc
        except Exception as exc:  # litellm maps every provider error onto its own classes
            raise ExtractionError(f"extraction LLM failed: {type(exc).__name__}: {exc}") from exc
        usage = getattr(response, "usage", None)
        text = response.choices[0].message.content or ""
        return Completion(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def aclose(self) -> None:
        """Nothing to close: litellm's clients are process-wide (see stop_litellm_background)."""
