"""What the gateway's handlers share, built once in the lifespan (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from gateway.metrics import Metrics
from gateway.providers import LiteLLMUpstream
from gateway.recorder import ExchangeRecorder
from gateway.upstream import ModelTable, OpenAICompatibleUpstream, Route, Upstream
from mnemo.config import Settings
from mnemo.queue import ExchangeQueue
from mnemo.retrieval import Retriever
from mnemo.runtime import Core
from mnemo.tokens import TokenCounter


@dataclass
class Services:
    settings: Settings
    http: httpx.AsyncClient
    models: ModelTable
    openai_upstream: OpenAICompatibleUpstream
    litellm_upstream: LiteLLMUpstream
    core: Core
    retriever: Retriever
    queue: ExchangeQueue
    recorder: ExchangeRecorder
    metrics: Metrics
    count_tokens: TokenCounter

    def upstream_for(self, route: Route) -> Upstream:
        return self.openai_upstream if route.openai_compatible else self.litellm_upstream
