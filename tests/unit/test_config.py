from __future__ import annotations

from pathlib import Path

import pytest

from mnemo.config import ExtractionSettings, Settings, load_settings
from mnemo.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mnemo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return str(caught.value)


# --- defaults and files --------------------------------------------------------------------


def test_no_file_and_no_environment_gives_the_documented_defaults() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8900)
    assert (settings.memory.default_mode, settings.memory.top_k, settings.memory.token_budget) == ("on", 8, 600)
    assert (settings.store.kind, settings.store.collection) == ("edge", "mnemo")
    assert settings.redis.url is None
    assert settings.models == []
    assert settings.extraction.effective_mode == "raw"


def test_load_settings_never_reads_os_environ_when_given_an_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMO_SERVER__PORT", "1234")
    assert load_settings(None, environ={}).server.port == 8900
    assert load_settings(None).server.port == 1234


def test_the_example_config_loads_and_describes_every_section() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert set(Settings.model_fields) <= set(settings.model_fields_set)
    assert [route.name for route in settings.models][:2] == ["*", "claude-sonnet"]
    assert settings.memory.default_mode == "on"
    assert settings.extraction.effective_mode == "raw"


def test_yaml_values_override_defaults_section_by_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir: /var/lib/mnemo
server: {port: 9000}
memory:
  top_k: 3
  default_mode: "read"
models:
  - name: fast
    model: gpt-4o-mini
    base_url: http://up/v1
    api_key: sk-secret
""",
    )
    settings = load_settings(path, environ={})
    assert settings.data_dir == "/var/lib/mnemo"
    assert (settings.server.port, settings.server.host) == (9000, "127.0.0.1")
    assert (settings.memory.top_k, settings.memory.default_mode, settings.memory.token_budget) == (3, "read", 600)
    (route,) = settings.models
    assert (route.name, route.model, route.provider, route.is_openai_compatible) == (
        "fast",
        "gpt-4o-mini",
        "openai",
        True,
    )
    assert route.api_key is not None and route.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(settings)


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing here\n"), environ={}) == Settings()


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert str(missing) in message and "cannot read" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_file_without_a_top_level_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    assert "must hold a mapping" in config_error(write(tmp_path, text))


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    assert "not valid YAML" in config_error(write(tmp_path, "server: [unclosed\n"))


# --- validation errors name the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("memory:\n  top_k: 0\n", "memory.top_k"),
        ("memory:\n  top_k: lots\n", "memory.top_k"),
        ("memory:\n  default_mode: sometimes\n", "memory.default_mode"),
        ("server:\n  port: 70000\n", "server.port"),
        ("server:\n  colour: blue\n", "server.colour"),
        ("unknown_section: {}\n", "unknown_section"),
        ("store:\n  kind: qdrant\n", "store"),
        ("models:\n  - provider: openai\n", "models.0.name"),
        ("models:\n  - name: x\n    base: http://typo\n", "models.0.base"),
        ("extraction:\n  mode: smart\n", "extraction.mode"),
        ("worker:\n  max_jobs: -1\n", "worker.max_jobs"),
        ("memory: 5\n", "memory"),
    ],
)
def test_unknown_keys_and_bad_values_name_the_field_path(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert str(path) in message
    assert f"  {field}: " in message


def test_all_invalid_fields_are_reported_together(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "memory:\n  top_k: 0\nserver:\n  port: -1\n"))
    assert "memory.top_k" in message and "server.port" in message


def test_a_qdrant_store_needs_a_url_or_a_path(tmp_path: Path) -> None:
    assert "store.kind=qdrant needs" in config_error(write(tmp_path, "store:\n  kind: qdrant\n"))
    assert load_settings(write(tmp_path, "store: {kind: qdrant, url: 'http://q:6333'}\n"), environ={}).store.url


# --- environment overrides -----------------------------------------------------------------


def test_env_overrides_a_nested_string_value() -> None:
    settings = load_settings(None, environ={"MNEMO_REDIS__URL": "redis://redis:6379/0"})
    assert settings.redis.url == "redis://redis:6379/0"


def test_env_values_are_json_when_they_parse() -> None:
    settings = load_settings(
        None,
        environ={
            "MNEMO_SERVER__PORT": "9000",
            "MNEMO_MEMORY__SCORE_THRESHOLD": "0.35",
            "MNEMO_WORKER__RETRY_BASE_DELAY_S": "0",
            "MNEMO_REDIS__URL": "null",
        },
    )
    assert (settings.server.port, settings.memory.score_threshold) == (9000, 0.35)
    assert settings.worker.retry_base_delay_s == 0
    assert settings.redis.url is None


def test_env_overrides_win_over_the_file_and_keep_its_other_values(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\n  host: 0.0.0.0\nredis:\n  queue_name: from-file\n")
    settings = load_settings(path, environ={"MNEMO_SERVER__PORT": "9100", "MNEMO_REDIS__QUEUE_NAME": "from-env"})
    assert (settings.server.port, settings.server.host, settings.redis.queue_name) == (9100, "0.0.0.0", "from-env")


def test_env_override_replaces_a_section_the_file_left_empty(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "redis:\n"), environ={"MNEMO_REDIS__QUEUE_NAME": "q"})
    assert settings.redis.queue_name == "q"


def test_env_keys_are_case_insensitive_after_the_prefix() -> None:
    assert load_settings(None, environ={"MNEMO_Memory__Top_K": "4"}).memory.top_k == 4


def test_env_variables_without_the_prefix_or_a_section_separator_are_ignored() -> None:
    environ = {"OTHER__SERVER__PORT": "1", "MNEMO_CONFIG": "x.yaml", "MNEMO_SLOW": "1", "MNEMO_TEST_REDIS_URL": "r"}
    assert load_settings(None, environ=environ) == Settings()


def test_a_bad_env_value_is_a_config_error_naming_the_field_and_the_environment() -> None:
    message = config_error(environ={"MNEMO_MEMORY__TOP_K": "0"})
    assert "environment" in message and "  memory.top_k: " in message


def test_an_unknown_env_field_is_a_config_error_naming_it() -> None:
    assert "  memory.topk: " in config_error(environ={"MNEMO_MEMORY__TOPK": "3"})


def test_env_setting_the_extraction_model_turns_auto_extraction_into_llm() -> None:
    settings = load_settings(None, environ={"MNEMO_EXTRACTION__MODEL": "openai/gpt-4o-mini"})
    assert settings.extraction.effective_mode == "llm"


def test_env_overrides_top_level_fields_like_the_model_table_and_data_dir() -> None:
    settings = load_settings(
        None,
        environ={
            "MNEMO_MODELS": '[{"name": "*", "base_url": "http://vllm:8000/v1", "api_key_env": "VLLM_KEY"}]',
            "MNEMO_DATA_DIR": "/data",
        },
    )
    assert [route.name for route in settings.models] == ["*"]
    assert settings.models[0].base_url == "http://vllm:8000/v1"
    assert settings.data_dir == "/data"


def test_a_numeric_looking_env_value_for_a_string_field_stays_a_string() -> None:
    settings = load_settings(None, environ={"MNEMO_STORE__COLLECTION": "2024", "MNEMO_EXTRACTION__API_KEY": "12345"})
    assert settings.store.collection == "2024"
    assert settings.extraction.api_key is not None and settings.extraction.api_key.get_secret_value() == "12345"


# --- extraction mode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "model", "effective"),
    [
        ("auto", None, "raw"),
        ("auto", "", "raw"),
        ("auto", "openai/gpt-4o-mini", "llm"),
        ("raw", "openai/gpt-4o-mini", "raw"),
        ("llm", None, "llm"),
        ("llm", "openai/gpt-4o-mini", "llm"),
    ],
)
def test_effective_extraction_mode(mode: str, model: str | None, effective: str) -> None:
    assert ExtractionSettings.model_validate({"mode": mode, "model": model}).effective_mode == effective


def test_data_path_is_absolute_and_expands_the_home_directory() -> None:
    path = Settings(data_dir="~/mnemo-data").data_path
    assert path.is_absolute() and "~" not in str(path)
