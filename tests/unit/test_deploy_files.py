"""deploy/ is checked here because no container engine runs in CI: every file parses, and every
command, port, route, env var, path and config it names exists in the code and the config schema."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.access import check_exposure
from gateway.app import create_app
from mnemo.config import Settings, load_settings
from mnemo_cli.main import parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG_IN_CONTAINER = "/etc/mnemo/config.yaml"
MNEMO_COMMANDS = {"up", "serve", "worker"}


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose(name: str) -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOY / name)
    return dict(doc)


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml(path) if "kind" in doc]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def routes() -> set[str]:
    return {route.path for route in create_app(Settings()).routes if hasattr(route, "path")}


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} as if NAME were unset, and ${NAME:?error} as if it were set."""
    value = re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", "a-required-value-of-32-characters", value)
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in (service.get("environment") or {}).items()}


def secret_data() -> dict[str, str]:
    return dict(k8s_object("Secret", "mnemo-secrets")["stringData"])


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secret_data()[ref["key"]] if ref else item["value"]
    return env


def mnemo_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in (o for o in k8s_objects() if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment["metadata"]["name"], container


def mnemo_services() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(compose file, service name, service) for every service running the mnemo command."""
    for name in ("compose.scaled.yaml", "compose.sidecar.yaml"):
        for service_name, service in compose(name)["services"].items():
            if (service.get("command") or [None])[0] == "mnemo":
                yield name, service_name, service


def mounted_config(service: dict[str, Any]) -> Path:
    volumes: list[str] = service["volumes"]
    (source,) = [v.split(":")[0] for v in volumes if v.split(":")[1] == CONFIG_IN_CONTAINER]
    return (DEPLOY / source).resolve()


def configmap_settings(tmp_path: Path, environ: dict[str, str]) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(k8s_object("ConfigMap", "mnemo-config")["data"]["config.yaml"])
    return load_settings(path, environ)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def test_every_yaml_file_in_deploy_parses() -> None:
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        assert load_yaml(path), path


@pytest.mark.parametrize("config", ["config.server.yaml", "config.sidecar.yaml"])
def test_deploy_config_files_load_with_mnemos_settings_loader(config: str) -> None:
    assert load_settings(DEPLOY / config, environ={}).server.host == "0.0.0.0"


def test_every_command_is_a_valid_mnemo_command_reading_the_mounted_config() -> None:
    commands = [service["command"] for _, _, service in mnemo_services()]
    commands += [container["command"] for _, container in mnemo_containers()]
    commands.append(json.loads(instructions("CMD")[-1]))
    assert {command[1] for command in commands} == MNEMO_COMMANDS
    for command in commands:
        args = parser().parse_args(command[1:])
        assert args.command in MNEMO_COMMANDS and args.config == CONFIG_IN_CONTAINER


def test_every_mnemo_env_var_in_compose_and_k8s_is_a_settings_field() -> None:
    environs = [compose_env(service) for _, _, service in mnemo_services()]
    environs += [container_env(container) for _, container in mnemo_containers()]
    variables = {key: value for environ in environs for key, value in environ.items() if key.startswith("MNEMO_")}
    assert {"MNEMO_REDIS__URL", "MNEMO_STORE__URL"} <= set(variables)
    for key, value in variables.items():
        model: Any = Settings
        for part in key.removeprefix("MNEMO_").lower().split("__"):
            assert part in model.model_fields, f"{key}: no settings field {part!r}"
            model = model.model_fields[part].annotation
        load_settings(environ={key: value})


def test_server_mode_services_get_a_qdrant_server_and_redis_and_the_sidecar_the_embedded_default() -> None:
    for file, name, service in mnemo_services():
        settings = load_settings(mounted_config(service), compose_env(service))
        if service["command"][1] != "worker":
            check_exposure(settings)  # listening beyond loopback: keys, or an explicit open API
        if service["command"][1] == "up":
            assert (file, settings.store.kind, settings.redis.url) == ("compose.sidecar.yaml", "edge", None)
            assert any(v.endswith(f":{settings.data_dir}") for v in service["volumes"]), "data dir is not a volume"
        else:
            assert settings.store.kind == "qdrant" and settings.store.url and settings.redis.url, name


def test_the_configmap_config_loads_with_the_deployments_env_and_suits_serve_and_worker(tmp_path: Path) -> None:
    for name, container in mnemo_containers():
        settings = configmap_settings(tmp_path, container_env(container))
        if container["command"][1] == "serve":
            assert settings.auth.configured, "the gateway listens beyond loopback: it needs keys"
            check_exposure(settings)
        assert settings.store.kind == "qdrant" and settings.store.url, name
        assert settings.redis.url and settings.redis.url.startswith("rediss://"), name
        named = {settings.store.api_key_env, settings.extraction.api_key_env}
        named |= {route.api_key_env for route in settings.models}
        assert {n for n in named if n} <= set(container_env(container)), f"{name} lacks a key variable"


def test_ports_agree_between_configs_compose_k8s_and_the_image(tmp_path: Path) -> None:
    scaled = compose("compose.scaled.yaml")["services"]
    server = load_settings(DEPLOY / "config.server.yaml", compose_env(scaled["gateway"]))
    assert scaled["gateway"]["expose"] == [str(server.server.port)]
    assert scaled["qdrant"]["expose"] == [str(urlsplit(server.store.url or "").port)]
    assert scaled["redis"]["expose"] == [str(urlsplit(server.redis.url or "").port)]
    assert {urlsplit(server.store.url or "").hostname, urlsplit(server.redis.url or "").hostname} <= set(scaled)

    sidecar = compose("compose.sidecar.yaml")["services"]
    baked = load_settings(DEPLOY / "config.sidecar.yaml", environ={})
    assert sidecar["mnemo"]["expose"] == [str(baked.server.port)]
    app_url = urlsplit(sidecar["app"]["environment"]["OPENAI_BASE_URL"])
    assert (app_url.hostname, app_url.port, app_url.path) == ("mnemo", baked.server.port, "/v1")
    assert instructions("EXPOSE") == [str(baked.server.port)]
    assert f"127.0.0.1:{baked.server.port}/" in instructions("HEALTHCHECK")[0]

    port = configmap_settings(tmp_path, {}).server.port
    gateway = k8s_object("Deployment", "mnemo-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["ports"] == [{"name": "http", "containerPort": port}]
    service = k8s_object("Service", "mnemo")["spec"]["ports"][0]
    assert service["port"] == port and service["targetPort"] == "http"


def test_dockerfile_is_multi_stage_non_root_pinned_and_checks_health_on_a_real_route() -> None:
    assert len(instructions("FROM")) >= 2
    (user,) = instructions("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert any("-c constraints.txt" in run for run in instructions("RUN"))
    (healthcheck,) = instructions("HEALTHCHECK")
    path = re.search(r"http://127\.0\.0\.1:\d+(/\w+)", healthcheck)
    assert path and path.group(1) == "/healthz" and path.group(1) in routes()
    assert json.loads(instructions("CMD")[-1]) == ["mnemo", "up", "--config", CONFIG_IN_CONTAINER]


def test_dockerfile_copies_only_files_that_exist_and_the_build_context_sends() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    sent = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in instructions("COPY"):
        words = shlex.split(copy)
        if any(word.startswith("--from=") for word in words):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in sent, f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_k8s_probes_hit_existing_routes_and_every_container_has_requests_and_limits() -> None:
    gateway = k8s_object("Deployment", "mnemo-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    probes = [gateway[key]["httpGet"] for key in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert {probe["path"] for probe in probes} <= routes()
    assert {probe["port"] for probe in probes} == {"http"}
    for name, container in mnemo_containers():
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name


def test_k8s_selectors_mounts_and_references_line_up() -> None:
    objects = k8s_objects()
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] == "Deployment"}
    for selecting in (o for o in objects if o["kind"] in {"Service", "PodDisruptionBudget", "Deployment"}):
        spec = selecting["spec"]
        wanted = spec["selector"].get("matchLabels", spec["selector"])
        matches = [n for n, pod in pods.items() if wanted.items() <= pod["metadata"]["labels"].items()]
        assert len(matches) == 1, f"{selecting['kind']} {selecting['metadata']['name']} selects {matches}"
    budgets = [o["spec"]["selector"]["matchLabels"] for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert {labels["app.kubernetes.io/component"] for labels in budgets} == {"gateway", "worker"}
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        (container,) = pod["spec"]["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/etc/mnemo"]]["configMap"]["name"] == "mnemo-config", name
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")


def test_images_are_pinned_and_mnemos_tag_is_the_project_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version
    services = [s for f in ("compose.scaled.yaml", "compose.sidecar.yaml") for s in compose(f)["services"].values()]
    images = [interpolate(s["image"]) for s in services]
    images += [container["image"] for _, container in mnemo_containers()]
    for image in (i for i in images if not i.startswith("my-app:")):  # the sidecar's stand-in for your app
        assert ":" in image and not image.endswith(":latest"), image
        if image.startswith("mnemo:"):
            assert image == f"mnemo:{version.group(1)}"
