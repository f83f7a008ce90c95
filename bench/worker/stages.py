"""Where a worker job's wall time goes: the LLM client, the embedder and the store, timed by
patching their classes for the measured run only (bench-side; nothing in the packages changes)."""

from __future__ import annotations

import time
from typing import Any

from mnemo.embedding import LocalOnnxEmbedder
from mnemo.llm import LiteLLMClient, OpenAICompatibleLLM
from mnemo.store.edge import EdgeMemoryStore


class Stages:
    """Wall time inside the LLM client, the embedder and the store, by patching their classes for the
    measured run only (bench-side; nothing in the packages changes)."""

    LLM_TARGETS = ((OpenAICompatibleLLM, "complete"), (LiteLLMClient, "complete"))
    TARGETS = (
        *LLM_TARGETS,
        (LocalOnnxEmbedder, "embed"),
        (EdgeMemoryStore, "search"),
        (EdgeMemoryStore, "upsert"),
        (EdgeMemoryStore, "invalidate"),
        (EdgeMemoryStore, "add_events"),
    )

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._originals = [(owner, name, getattr(owner, name)) for owner, name in self.TARGETS]

    def install(self) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, self._timed(f"{owner.__name__}.{name}", original))

    def _timed(self, key: str, original: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
                self.calls[key] = self.calls.get(key, 0) + 1

        return timed

    def uninstall(self) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)

    @property
    def llm_seconds(self) -> float:
        return sum(self.seconds.get(f"{owner.__name__}.{name}", 0.0) for owner, name in self.LLM_TARGETS)

    @property
    def llm_calls(self) -> int:
        return sum(self.calls.get(f"{owner.__name__}.{name}", 0) for owner, name in self.LLM_TARGETS)

    def per_exchange(self, count: int) -> dict[str, float]:
        return {key: round(value * 1000 / count, 3) for key, value in sorted(self.seconds.items())}
