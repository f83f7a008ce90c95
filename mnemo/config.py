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

from mnemo.config_errors import describe_errors, yaml_key_lines
from mnemo.durations import parse_duration
from mnemo.errors import ConfigError

ENV_PREFIX = "MNEMO_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field(
        default="127.0.0.1",
        description="Address the gateway binds to (non-loopback needs auth keys or allow_open_network).",
    )
    port: int = Field(default=8900, ge=0, le=65535, description="TCP port of the gateway.")
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above it)."
    )
    # Slow and greedy clients: uvicorn alone holds a connection that never finishes its headers or its
    # body for ever, accepts connections up to the open-files limit, and parses bodies without a memory bound.
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a client has to send a request's line and headers, from connecting (or from the "
        "first byte of its next request on a kept-alive connection); then 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest stall of a request body once its headers arrived; then 408 (when nothing was "
        "answered yet) and the connection is closed. Also the allowance before body_min_bytes_per_s applies.",
    )
    body_min_bytes_per_s: int = Field(
        default=16 * 1024,
        ge=0,
        description="Slowest average rate a request body may arrive at, beyond body_timeout_s of allowance: a body "
        "trickled slower is cut like a stalled one, however short its stalls (0: stalls only).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Most open client connections, kept-alive ones included; a connection beyond them is answered "
        "503 server_busy with Retry-After as soon as its headers arrive, then closed.",
    )
    max_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Memory budget of the JSON bodies in flight, each charged an estimate of its parsed size (8 per "
        "byte plus 160 per JSON value) from its first byte until its response has ended; a request that does not "
        "fit gets 429 server_busy with Retry-After (one larger than the whole budget runs alone).",
    )
    # An idle limit, not a total: long generations may stream for minutes.
    upstream_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description=(
            "How long the upstream may stay silent: the wait for the response and for each streamed chunk "
            "(a stream that keeps sending never times out)."
        ),
    )
    upstream_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout for connecting to an upstream provider."
    )
    # With no auth keys configured the API is open, so only a loopback host is allowed unless this is set.
    allow_open_network: bool = Field(
        default=False,
        description="Allow a non-loopback host without auth keys (the API is then open to anyone).",
    )
    # Every other OpenAI endpoint (embeddings, files, audio, ...) relayed untouched: "change the base URL only".
    passthrough: bool = Field(
        default=True,
        description="Relay every /v1/* request Mnemo does not serve itself to the upstream unchanged (no memory).",
    )
    passthrough_model: str | None = Field(
        default=None,
        description="The model entry serving pass-through requests that name no JSON `model` (multipart uploads, "
        "GETs); unset: the '*' entry.",
    )
    max_passthrough_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        description="Largest pass-through request body, streamed (never held in memory); 413 above it.",
    )
    memory_api_prefix: str = Field(
        default="/v1",
        pattern=r"^(/[A-Za-z0-9_-]+)+$",
        description="Path prefix of the memory API (/memories, /users, /events, /requests, /imports); move it (e.g. "
        "/mnemo/v1) when the upstream serves the same paths.",
    )


class ModelRoute(_Section):
    """One row of the model table: a public name mapped onto a provider's model."""

    name: str = Field(description="Model name clients send; '*' matches any name not listed.")
    provider: str = Field(default="openai", description="'openai' (any OpenAI-compatible API) or a litellm provider.")
    model: str | None = Field(default=None, description="Provider's model name; defaults to the public name.")
    base_url: str | None = Field(
        default=None,
        description="The provider's API base URL: for provider=openai, any OpenAI-compatible /v1; for "
        "provider=anthropic, the host root (/v1/messages is appended; default https://api.anthropic.com).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The provider key (prefer api_key_env); without one the client's Authorization is forwarded.",
    )
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key.")

    @property
    def is_openai_compatible(self) -> bool:
        return self.provider == "openai"


class MemorySettings(_Section):
    default_mode: Literal["on", "read", "write", "off"] = Field(
        default="on", description="Memory mode when a request sends no X-Mnemo-Memory header."
    )
    top_k: int = Field(default=8, ge=1, le=100, description="Most memories retrieved per chat request.")
    score_threshold: float = Field(
        default=0.2,
        ge=-1.0,
        le=1.0,
        description="Least cosine similarity of a memory found by meaning; keyword matches are kept regardless.",
    )
    token_budget: int = Field(default=600, ge=0, description="Most tokens of memory text injected per request.")
    retrieval_timeout_ms: int = Field(
        default=150,
        gt=0,
        description="How long retrieval waits on a dependency that shows no progress (the query embedder neither "
        "finishing nor computing a forward pass, a store search or embeddings call not answering) before taking it "
        "to be down: the request goes on without memory (skipped:timeout). Waiting behind other chats' queries that "
        "keep finishing is not counted here.",
    )
    retrieval_ceiling_ms: int = Field(
        default=2000,
        gt=0,
        description="Most time retrieval takes, waiting in a busy query embedder's queue included (never less than "
        "retrieval_timeout_ms): past it, or at once when the queries ahead cannot be embedded within it, the request "
        "goes on without memory (skipped:overloaded).",
    )
    # Earlier messages joined to the latest user message so a short follow-up is searchable.
    query_context_messages: int = Field(
        default=2,
        ge=0,
        le=20,
        description="Earlier messages joined to a short latest user message so a follow-up is searchable.",
    )
    query_short_chars: int = Field(
        default=40, ge=0, description="A latest user message shorter than this is a short follow-up."
    )
    # Hybrid search (dense + BM25 keywords); defaults measured on LOCOMO, see bench/README.md "recall".
    fusion: Literal["rrf", "dbsf", "dense"] = Field(
        default="rrf",
        description="Merging dense and keyword results: reciprocal rank (rrf), distribution-based (dbsf), dense only.",
    )
    rrf_k: int = Field(default=5, ge=1, description="The k constant of reciprocal rank fusion.")
    hybrid_candidates: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Candidates fetched from each of the dense and keyword searches before fusion.",
    )
    keyword_weight: float = Field(
        default=2.0, gt=0.0, description="Weight of the keyword (BM25) results in rrf fusion; dense results weigh 1."
    )
    recency_half_life_days: float | None = Field(
        default=None, gt=0, description="When set, older memories score lower: a memory this many days old counts half."
    )
    speaker_boost: float = Field(
        default=1.0,
        ge=0.0,
        description="When a query is about one speaker of the memories found (metadata.speaker, e.g. imported "
        "conversations: the one it names, or the first of several named apart), their distance to a perfect score "
        "shrinks by 1 + this, then results are re-ranked; 0 is off.",
    )
    search_without_speaker_names: bool = Field(
        default=True,
        description="When a query names speakers of the memories found, search by meaning a second time with the "
        "names replaced by 'someone', so the speaker boost, not the name's words, decides whose memories rank first.",
    )


class EmbedderSettings(_Section):
    kind: Literal["local", "openai"] = Field(
        default="local",
        description="'local' (bundled MiniLM, no network) or 'openai' (any OpenAI-compatible /embeddings).",
    )
    model: str | None = Field(default=None, description="Model name for kind=openai.")
    base_url: str | None = Field(default=None, description="The /embeddings API base URL for kind=openai.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the embeddings API key.")
    dimension: int | None = Field(default=None, description="Vector size for kind=openai.")
    threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads for kind=local.")
    activations: Literal["int8", "float32"] = Field(
        default="int8",
        description="kind=local: 'int8' (fused int8 products, ~2x faster) or 'float32' (the wheel's graph as shipped).",
    )
    stored_activations: Literal["mixed", "int8"] = Field(
        default="mixed",
        description=(
            "kind=local with activations=int8, texts being stored: 'mixed' keeps the first layer's "
            "feed-forward output product in float32 (vectors nearer the float32 model's, ~10% more time per "
            "text, off the chat path); 'int8' embeds them like queries."
        ),
    )
    model_cache_dir: str | None = Field(
        default=None,
        description=(
            "kind=local, activations=int8: where the model's fused graphs are built once (in a child process) "
            "and kept, to be mapped by every later start; unset: $XDG_CACHE_HOME/mnemo or ~/.cache/mnemo. "
            "Unwritable: a private temporary directory, rebuilt at each start."
        ),
    )


class StoreSettings(_Section):
    kind: Literal["edge", "qdrant"] = Field(
        default="edge",
        description="'edge' (Qdrant Edge in-process under data_dir) or 'qdrant' (a server, or local mode).",
    )
    url: str | None = Field(default=None, description="Qdrant server URL for kind=qdrant.")
    path: str | None = Field(default=None, description="qdrant-client local mode directory (tests, tiny data).")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the Qdrant API key.")
    collection: str = Field(default="mnemo", description="Qdrant collection name.")
    vector_cache_min_memories: int = Field(
        default=2000,
        ge=0,
        description=(
            "Embedded store: a user holding at least this many memories has their dense vectors kept in "
            "memory, so a search scores the nearest few instead of scanning them all (0: never)."
        ),
    )
    vector_cache_mb: int = Field(
        default=256,
        ge=0,
        description=(
            "Embedded store: memory for those vectors at most (MiB); the least recently searched users "
            "leave first (0: no cache)."
        ),
    )

    @model_validator(mode="after")
    def _server_needs_location(self) -> StoreSettings:
        if self.kind == "qdrant" and not (self.url or self.path):
            raise ValueError("store.kind=qdrant needs store.url (a Qdrant server) or store.path (local mode)")
        return self


class RedisSettings(_Section):
    url: str | None = Field(default=None, description="Redis URL; unset means an embedded Redis in data_dir.")
    queue_name: str = Field(
        default="mnemo:queue", description="The arq queue (a Redis sorted set) exchanges are enqueued on."
    )
    enqueue_timeout_s: float = Field(
        default=2.0, gt=0, description="How long a finished response may wait for Redis to accept its exchange."
    )
    # Exchanges kept on disk (data_dir/outbox.sqlite3) while Redis is unreachable, at most.
    outbox_max_items: int = Field(
        default=100_000,
        ge=1,
        description="Exchanges kept on disk (data_dir/outbox.sqlite3) while Redis is unreachable, at most.",
    )


class ExtractionSettings(_Section):
    mode: Literal["auto", "raw", "llm"] = Field(
        default="auto", description="'auto' is 'llm' when a model is configured, else 'raw'."
    )
    model: str | None = Field(
        default=None,
        description="A litellm model name, e.g. 'openai/gpt-4o-mini' (openai/ models are called directly).",
    )
    base_url: str | None = Field(default=None, description="API base URL for the extraction model.")
    api_key: SecretStr | None = Field(default=None, description="Key for the extraction model; prefer api_key_env.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the extraction model's key."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one extraction LLM call.")
    similar_limit: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Existing memories shown to the LLM when deciding ADD/UPDATE/DELETE for new facts.",
    )
    raw_filter: Literal["statements", "all"] = Field(
        default="statements",
        description="Raw mode: 'statements' stores only user messages that state something (not questions, "
        "greetings or thanks; mnemo/raw_filter.py); 'all' stores every new user message.",
    )

    @property
    def effective_mode(self) -> Literal["raw", "llm"]:
        if self.mode == "auto":
            return "llm" if self.model else "raw"
        return self.mode


class WorkerSettings(_Section):
    max_jobs: int = Field(default=8, ge=1, description="Jobs one worker runs concurrently.")
    max_tries: int = Field(
        default=8, ge=1, description="Attempts per job for transient failures (LLM 429/5xx/timeouts, store down)."
    )
    job_timeout_s: float = Field(default=300.0, gt=0, description="Longest one job may run before it is cancelled.")
    retry_base_delay_s: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles on each try (at most 300 s)."
    )
    catch_up_after_s: float = Field(
        default=5.0,
        ge=0,
        description="Under mnemo up, while chats are in flight: how far behind (the wait of the last job started) "
        "the worker may fall before it runs jobs back to back instead of one per 50 ms poll.",
    )


class LimitSettings(_Section):
    """Bounds on what one request or one user can write, so no client can flood the store or the worker."""

    max_memories_per_exchange: int = Field(
        default=20,
        ge=1,
        description="Most memories one exchange creates: in raw mode the newest user messages of its turn are "
        'kept; the rest are skipped and counted (mnemo_worker_memories_skipped_total{reason="per_exchange"}).',
    )
    max_facts_per_exchange: int = Field(
        default=20,
        ge=1,
        description="llm mode: most facts taken from one extraction answer (the first ones); the rest are skipped "
        "and counted like max_memories_per_exchange.",
    )
    max_messages_per_write: int = Field(
        default=100, ge=1, description="Most `messages` in one POST /v1/memories or mem0 add (400 above it)."
    )
    max_memory_chars: int = Field(
        default=4000,
        ge=100,
        description="Longest memory text. A longer raw-mode user message is stored cut to this length "
        "(mnemo_worker_memories_truncated_total); a longer fact or message sent to the API for storing "
        "verbatim is a 400.",
    )
    memories_per_user_per_minute: int = Field(
        default=300,
        ge=0,
        description="Most memories written per user per minute (fixed one-minute windows, counted in Redis; "
        "chat exchanges count in the minute they completed). Over it the worker skips the excess "
        '(reason="rate_limited") and the Memory API answers 429 with Retry-After. 0: no limit.',
    )


class ImportSettings(_Section):
    """``mnemo import`` (POST /v1/imports): past conversations through the same queue and worker as chats."""

    max_pending: int = Field(
        default=200,
        ge=1,
        description="Most exchanges of one user waiting in the queue that an import adds to: a batch beyond "
        "gets 429 import_backpressure (the CLI waits and resends), so an import runs at the worker's pace and a "
        "live chat of the same user waits behind at most this many imported exchanges.",
    )


class MetadataRetention(_Section):
    """A retention rule by metadata: memories whose ``metadata.<key>`` is ``value`` (any value when
    unset) are kept ``ttl``."""

    key: str = Field(min_length=1, description="The metadata key the rule looks at.")
    value: str | int | bool | None = Field(default=None, description="The value it must have (unset: any value).")
    ttl: str | None = Field(description="How long such memories are kept, e.g. 7d (null: no expiry).")

    @model_validator(mode="after")
    def _ttl_is_a_duration(self) -> MetadataRetention:
        if self.ttl is not None:
            parse_duration(self.ttl)
        return self


class RetentionSettings(_Section):
    """How long memories are kept. A memory's expiry is stamped when it is written (created_at plus
    the TTL that applies, or an earlier one the writer asked for); from that moment it is never
    injected, searched, listed or shown, and the worker's sweep erases it for good."""

    session_ttl: str | None = Field(
        default=None, description="TTL of memories written with a session id, e.g. 1d (null: no expiry)."
    )
    agent_ttl: str | None = Field(
        default=None, description="TTL of memories written with an agent id and no session id (null: no expiry)."
    )
    user_ttl: str | None = Field(
        default=None, description="TTL of user-level memories (no agent, no session), e.g. 365d (null: no expiry)."
    )
    metadata_rules: list[MetadataRetention] = Field(
        default=[],
        description="Rules by metadata, tried in order; the first that matches sets the TTL instead of the scope's.",
    )
    sweep_interval_s: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="How often the worker erases expired memories (a divisor of 60, or whole minutes dividing 60).",
    )

    @model_validator(mode="after")
    def _durations(self) -> RetentionSettings:
        for name in ("session_ttl", "agent_ttl", "user_ttl"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"retention.{name}: {exc}") from None
        interval = self.sweep_interval_s
        if not (60 % interval == 0 or (interval % 60 == 0 and 60 % (interval // 60) == 0)):
            raise ValueError("retention.sweep_interval_s must divide 60, or be whole minutes dividing 60")
        return self


class TenantSettings(_Section):
    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,63}$",
        description="Tenant id; user ids of the tenant's requests are namespaced with it.",
    )
    keys: list[SecretStr] = Field(default=[], description="API keys of the tenant (at least 16 characters each).")


class AuthSettings(_Section):
    """API keys: an admin key sees every tenant; a tenant key only its own tenant's users."""

    admin_keys: list[SecretStr] = Field(
        default=[], description="API keys that see every tenant (at least 16 characters each)."
    )
    tenants: list[TenantSettings] = Field(
        default=[], description="Tenants and their keys; a tenant key only sees its own tenant's users."
    )

    @property
    def configured(self) -> bool:
        return bool(self.admin_keys) or any(tenant.keys for tenant in self.tenants)

    @model_validator(mode="after")
    def _keys_are_distinct(self) -> AuthSettings:
        keys = [key.get_secret_value() for key in self.admin_keys]
        keys += [key.get_secret_value() for tenant in self.tenants for key in tenant.keys]
        if any(len(key) < 16 for key in keys):
            raise ValueError("auth keys must be at least 16 characters")
        if len(set(keys)) != len(keys):
            raise ValueError("an auth key is listed twice (keys must be unique across admin and tenants)")
        ids = [tenant.id for tenant in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("tenant ids must be unique")
        return self


class Settings(_Section):
    data_dir: str = Field(
        default="./data", description="Directory for the embedded store, the embedded Redis and the outbox."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description=(
            "The event loop of mnemo up/serve/worker: uvloop (installed with uvicorn[standard]; ~3 ms less "
            "added per chat than asyncio's), asyncio, or auto (uvloop when importable)."
        ),
    )
    server: ServerSettings = ServerSettings()
    models: list[ModelRoute] = Field(
        default=[], description="The model table: which upstream serves each public model name."
    )
    memory: MemorySettings = MemorySettings()
    embedder: EmbedderSettings = EmbedderSettings()
    store: StoreSettings = StoreSettings()
    redis: RedisSettings = RedisSettings()
    extraction: ExtractionSettings = ExtractionSettings()
    worker: WorkerSettings = WorkerSettings()
    limits: LimitSettings = LimitSettings()
    imports: ImportSettings = ImportSettings()
    retention: RetentionSettings = RetentionSettings()
    auth: AuthSettings = AuthSettings()

    @model_validator(mode="after")
    def _passthrough_model_is_listed(self) -> Settings:
        name = self.server.passthrough_model
        if name is not None and name not in {route.name for route in self.models}:
            raise ValueError(f"server.passthrough_model {name!r} names no entry of `models`")
        return self

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (if any), apply ``MNEMO_*`` environment overrides, validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    env_vars: dict[tuple[str | int, ...], str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        field_path = key[len(ENV_PREFIX) :].lower().split("__")
        # MNEMO_<SECTION>__<FIELD>, or MNEMO_<FIELD> for top-level fields (MNEMO_MODELS, MNEMO_DATA_DIR);
        # other MNEMO_* variables (MNEMO_CONFIG, ...) are not settings.
        if len(field_path) > 1 or field_path[0] in Settings.model_fields:
            _apply_override(raw, field_path, value)
            env_vars[tuple(field_path)] = key
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = yaml_key_lines(Path(path)) if path is not None else {}
        raise ConfigError(describe_errors(exc, str(path or "environment"), env_vars, lines)) from None


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
