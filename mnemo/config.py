"""Settings: one nested model per component, matching config.example.yaml section by section.

Values come from a YAML file, then environment variables override them:
``MNEMO_<SECTION>__<FIELD>=value`` (for example ``MNEMO_REDIS__URL=redis://...``).
Nothing here runs at import time; callers build settings with :func:`load_settings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from mnemo.errors import ConfigError

ENV_PREFIX = "MNEMO_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8900, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # How long one upstream call may take end to end (long generations stream for minutes).
    upstream_timeout_s: float = Field(default=600.0, gt=0)
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)


class ModelRoute(_Section):
    """One row of the model table: a public name mapped onto a provider's model."""

    name: str = Field(description="Model name clients send; '*' matches any name not listed.")
    provider: str = Field(default="openai", description="'openai' (any OpenAI-compatible API) or a litellm provider.")
    model: str | None = Field(default=None, description="Provider's model name; defaults to the public name.")
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key.")

    @property
    def is_openai_compatible(self) -> bool:
        return self.provider == "openai"


class MemorySettings(_Section):
    default_mode: Literal["on", "read", "write", "off"] = "on"
    top_k: int = Field(default=8, ge=1, le=100)
    score_threshold: float = Field(default=0.2, ge=-1.0, le=1.0)
    token_budget: int = Field(default=600, ge=0)
    retrieval_timeout_ms: int = Field(default=150, gt=0)
    # Earlier messages joined to the latest user message so a short follow-up is searchable.
    query_context_messages: int = Field(default=2, ge=0, le=20)
    query_short_chars: int = Field(default=40, ge=0)
    # Hybrid search (dense + BM25 keywords); defaults measured on LOCOMO, see bench/README.md "recall".
    fusion: Literal["rrf", "dbsf", "dense"] = "rrf"
    rrf_k: int = Field(default=60, ge=1)
    hybrid_candidates: int = Field(default=50, ge=1, le=1000)
    keyword_weight: float = Field(default=1.0, ge=0.0)
    recency_half_life_days: float | None = Field(default=None, gt=0)


class EmbedderSettings(_Section):
    kind: Literal["local", "openai"] = "local"
    model: str | None = Field(default=None, description="Model name for kind=openai.")
    base_url: str | None = None
    api_key_env: str | None = None
    dimension: int | None = Field(default=None, description="Vector size for kind=openai.")
    threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads for kind=local.")


class StoreSettings(_Section):
    kind: Literal["edge", "qdrant"] = "edge"
    url: str | None = Field(default=None, description="Qdrant server URL for kind=qdrant.")
    path: str | None = Field(default=None, description="qdrant-client local mode directory (tests, tiny data).")
    api_key_env: str | None = None
    collection: str = "mnemo"

    @model_validator(mode="after")
    def _server_needs_location(self) -> StoreSettings:
        if self.kind == "qdrant" and not (self.url or self.path):
            raise ValueError("store.kind=qdrant needs store.url (a Qdrant server) or store.path (local mode)")
        return self


class RedisSettings(_Section):
    url: str | None = Field(default=None, description="Redis URL; unset means an embedded Redis in data_dir.")
    queue_name: str = "mnemo:queue"
    enqueue_timeout_s: float = Field(default=2.0, gt=0)
    # Exchanges kept on disk (data_dir/outbox.sqlite3) while Redis is unreachable, at most.
    outbox_max_items: int = Field(default=100_000, ge=1)


class ExtractionSettings(_Section):
    mode: Literal["auto", "raw", "llm"] = Field(
        default="auto", description="'auto' is 'llm' when a model is configured, else 'raw'."
    )
    model: str | None = Field(default=None, description="A litellm model name, e.g. 'openai/gpt-4o-mini'.")
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    similar_limit: int = Field(default=5, ge=1, le=50)

    @property
    def effective_mode(self) -> Literal["raw", "llm"]:
        if self.mode == "auto":
            return "llm" if self.model else "raw"
        return self.mode


class WorkerSettings(_Section):
    max_jobs: int = Field(default=8, ge=1)
    max_tries: int = Field(default=8, ge=1)
    job_timeout_s: float = Field(default=300.0, gt=0)
    retry_base_delay_s: float = Field(default=1.0, ge=0)


class Settings(_Section):
    data_dir: str = "./data"
    server: ServerSettings = ServerSettings()
    models: list[ModelRoute] = []
    memory: MemorySettings = MemorySettings()
    embedder: EmbedderSettings = EmbedderSettings()
    store: StoreSettings = StoreSettings()
    redis: RedisSettings = RedisSettings()
    extraction: ExtractionSettings = ExtractionSettings()
    worker: WorkerSettings = WorkerSettings()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (if any), apply ``MNEMO_*`` environment overrides, validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        field_path = key[len(ENV_PREFIX) :].lower().split("__")
        # MNEMO_<SECTION>__<FIELD>, or MNEMO_<FIELD> for top-level fields (MNEMO_MODELS, MNEMO_DATA_DIR);
        # other MNEMO_* variables (MNEMO_CONFIG, ...) are not settings.
        if len(field_path) > 1 or field_path[0] in Settings.model_fields:
            _apply_override(raw, field_path, value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source=str(path or "environment"))) from None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _apply_override(raw: dict[str, Any], parts: list[str], value: str) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    # JSON lets an env var carry lists and mappings (the model table); scalars stay strings and
    # pydantic converts them, so a numeric-looking key or collection name is not turned into an int.
    if value.strip() == "null":
        node[parts[-1]] = None
        return
    if value.lstrip()[:1] in ("[", "{"):
        try:
            node[parts[-1]] = json.loads(value)
            return
        except ValueError:
            pass
    node[parts[-1]] = value
