"""The extraction LLM: any litellm model, asked for JSON, with provider errors sorted into
transient (retry the job later) and permanent ones.

litellm is imported lazily: the import costs seconds and, without
LITELLM_LOCAL_MODEL_COST_MAP, tries to fetch a price list from the internet.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol

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


class LiteLLMClient:
    def __init__(self, settings: ExtractionSettings) -> None:
        if not settings.model:
            raise ExtractionError("extraction.mode=llm needs extraction.model")
        self.model = settings.model
        self._base_url = settings.base_url
        self._timeout = settings.timeout_s
        key = settings.api_key.get_secret_value() if settings.api_key else None
        if key is None and settings.api_key_env:
            key = os.environ.get(settings.api_key_env)
        self._api_key = key
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
