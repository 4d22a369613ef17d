"""docker-compose.temporal.yml keeps its structural promises.

No Docker engine is needed: the file is read with PyYAML (anchors and merge keys resolved) and
checked service by service. When a Compose CLI is on PATH, ``config -q`` also validates it the
way ``docker compose up`` reads it; without one that single test is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"

SEARCH_ATTRIBUTES = {"IndexingRunId", "DocumentId", "TenantId", "DocStatus", "ErrorType"}
DOCINDEX_SERVICES = {"api", "workflow-worker", "cpu-worker", "hosted-worker", "gpu-worker"}
SCALABLE = {"workflow-worker", "cpu-worker", "gpu-worker"}
ONE_SHOT = {"temporal-schema", "temporal-setup", "minio-setup", "worker-deployment"}
# Sets the Worker Deployment's current version once the workers poll; nothing waits for it.
ROLLOUT = {"worker-deployment"}
# Serves people without publishing a port: used with `docker compose exec`.
OPERATOR_TOOLS = {"temporal-admin-tools"}
EXPECTED_IMAGES = {
    "temporal": "temporalio/server",
    "temporal-schema": "temporalio/admin-tools",
    "temporal-setup": "temporalio/admin-tools",
    "temporal-admin-tools": "temporalio/admin-tools",
    "temporal-ui": "temporalio/ui",
    "temporal-postgres": "postgres",
    "postgres": "pgvector/pgvector",
    "minio": "minio/minio",
    "minio-setup": "minio/mc",
}
DOCINDEX_ENV = {
    "DOCINDEX_TEMPORAL_ADDRESS",
    "DOCINDEX_DATABASE_URL",
    "DOCINDEX_BLOB_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "DOCINDEX_API_HOST",
    "HF_HUB_OFFLINE",
    "DOCINDEX_PDF_PIPELINE",
    "DOCLING_ARTIFACTS_PATH",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?]([^}]*))?\}")


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _defaults(value: Any) -> str:
    """Interpolate like Compose does with an empty environment: ${VAR:-default} -> default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", str(value))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: _defaults(value) for key, value in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _published_ports(service: dict[str, Any]) -> list[str]:
    """Host ports a service publishes ("" for none); container-only entries are skipped."""
    published = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                published.append(str(port["published"]))
            continue
        parts = _defaults(port).split("/")[0].rsplit(":", 2)
        if len(parts) >= 2:
            published.append(parts[-2])
    return published


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(arg) for arg in command]


def _mounted_file(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            return (ROOT / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def _image(service: dict[str, Any]) -> str:
    return _defaults(service.get("image", ""))


def test_all_services_are_present() -> None:
    services = _services()
    expected = set(EXPECTED_IMAGES) | DOCINDEX_SERVICES | {"jaeger"}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"
    for name, repository in EXPECTED_IMAGES.items():
        assert _image(services[name]).split(":")[0] == repository, name
    assert "jaeger" in _image(services["jaeger"])


def test_images_are_pinned() -> None:
    for name, service in _services().items():
        image = _image(service)
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"


def test_temporal_keeps_persistence_and_visibility_in_postgres() -> None:
    services = _services()
    temporal = services["temporal"]
    env = _env(temporal)
    assert env["DB"] == "postgres12"
    assert "postgres" in _image(services[env["POSTGRES_SEEDS"]])
    assert _depends(temporal)["temporal-schema"] == "service_completed_successfully"

    schema = services["temporal-schema"]
    script = _mounted_file(schema, schema["entrypoint"][-1]).read_text()
    assert "temporal-sql-tool" in script
    assert "postgresql/v12" in script
    assert "temporal/versioned" in script
    assert "visibility/versioned" in script


def test_setup_creates_the_namespace_and_registers_search_attributes() -> None:
    services = _services()
    setup = services["temporal-setup"]
    pairs = dict(arg.split("=", 1) for arg in _command(setup))
    assert pairs == dict.fromkeys(SEARCH_ATTRIBUTES, "Keyword")

    script = _mounted_file(setup, setup["entrypoint"][-1]).read_text()
    assert "temporal operator namespace create" in script
    assert "temporal operator search-attribute create" in script
    assert _env(setup)["TEMPORAL_NAMESPACE"] == _env(services["api"])["DOCINDEX_TEMPORAL_NAMESPACE"]
    assert _depends(setup)["temporal"] == "service_healthy"


def test_workers_are_scalable() -> None:
    services = _services()
    for name in SCALABLE:
        service = services[name]
        assert "container_name" not in service, f"{name} has a fixed container name"
        assert not _published_ports(service), f"{name} publishes a fixed host port"
    assert _command(services["workflow-worker"])[-2:] == ["--queue", "workflow"]
    assert _command(services["cpu-worker"])[-2:] == ["--queue", "cpu"]
    assert _command(services["gpu-worker"])[-2:] == ["--queue", "gpu"]


def test_parsing_and_embedding_yield_the_host_cpu_to_what_requests_wait_on() -> None:
    """On one host each container is its own cgroup: the workers' niceness counts only
    inside theirs, so their CPU weight is what puts them behind the API and Temporal."""
    services = _services()
    default = 1024
    for name in ("cpu-worker", "gpu-worker"):
        assert int(services[name].get("cpu_shares", default)) < default // 8, name
    for name in ("api", "workflow-worker", "temporal", "postgres"):
        assert int(services[name].get("cpu_shares", default)) >= default, name


def test_gpu_worker_reserves_an_nvidia_gpu() -> None:
    devices = _services()["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
        for device in devices
    )


def test_every_service_is_used() -> None:
    """Infrastructure is depended on or serves people; docindex's processes are the point."""
    services = _services()
    depended_on = {target for service in services.values() for target in _depends(service)}
    user_facing = {name for name, service in services.items() if _published_ports(service)}
    unused = (
        set(services) - depended_on - user_facing - OPERATOR_TOOLS - DOCINDEX_SERVICES - ROLLOUT
    )
    assert not unused, f"nothing depends on or uses: {sorted(unused)}"


def test_dependencies_exist_and_wait_for_the_right_state() -> None:
    services = _services()
    for name, service in services.items():
        for target, condition in _depends(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"
    for name in ONE_SHOT:
        assert str(services[name].get("restart", "no")) == "no", f"{name} must run once"
    for name in DOCINDEX_SERVICES:
        deps = _depends(services[name])
        assert deps.get("temporal-setup") == "service_completed_successfully", name
        assert deps.get("minio-setup") == "service_completed_successfully", name
        assert deps.get("postgres") == "service_healthy", name


def test_docindex_services_get_their_endpoints() -> None:
    services = _services()
    for name in DOCINDEX_SERVICES:
        env = _env(services[name])
        assert DOCINDEX_ENV <= set(env), f"{name} misses {sorted(DOCINDEX_ENV - set(env))}"
        assert env["DOCINDEX_TEMPORAL_ADDRESS"].split(":")[0] == "temporal", name
        database = urlsplit(env["DOCINDEX_DATABASE_URL"])
        assert database.scheme == "postgresql" and database.hostname == "postgres", name
        assert env["DOCINDEX_BLOB_URL"].startswith("s3://"), name
        assert urlsplit(env["AWS_ENDPOINT_URL"]).hostname == "minio", name
        assert env["DOCINDEX_API_HOST"] == "0.0.0.0", name
        assert env["HF_HUB_OFFLINE"] == "1", name
        assert env["DOCINDEX_PDF_PIPELINE"] == "auto", name
        assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname in services, name

    # The bucket the app writes to is the one minio-setup creates, with the same key.
    api, minio_setup = _env(services["api"]), _env(services["minio-setup"])
    assert urlsplit(api["DOCINDEX_BLOB_URL"]).hostname == minio_setup["BUCKET"]
    assert api["AWS_ACCESS_KEY_ID"] == minio_setup["APP_ACCESS_KEY"]
    assert api["AWS_SECRET_ACCESS_KEY"] == minio_setup["APP_SECRET_KEY"]


def test_worker_deployment_makes_the_workers_build_current() -> None:
    """Every docindex process names the same Worker Deployment and build id (empty: the hash
    of the workflow code in the image); a one-shot of the same image makes it current."""
    services = _services()
    one_shot = services["worker-deployment"]
    assert _command(one_shot)[:4] == ["python", "-m", "workers.versioning", "set-current"]
    assert _image(one_shot) == _image(services["workflow-worker"])
    assert _depends(one_shot)["workflow-worker"] == "service_started"
    env = _env(one_shot)
    assert env["DOCINDEX_DEPLOYMENT_NAME"] == "docindex"
    assert env["DOCINDEX_BUILD_ID"] == ""
    for name in DOCINDEX_SERVICES:
        other = _env(services[name])
        for key in ("DOCINDEX_DEPLOYMENT_NAME", "DOCINDEX_BUILD_ID", "DOCINDEX_TEMPORAL_NAMESPACE"):
            assert other[key] == env[key], (name, key)


def test_cpu_and_gpu_images_take_torch_from_different_indexes() -> None:
    services = _services()
    for name in DOCINDEX_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
    cpu = _defaults(services["cpu-worker"]["build"]["args"]["TORCH_INDEX_URL"])
    gpu = _defaults(services["gpu-worker"]["build"]["args"]["TORCH_INDEX_URL"])
    assert cpu.endswith("/whl/cpu")
    assert gpu != cpu
    assert _image(services["gpu-worker"]) != _image(services["cpu-worker"])


def test_bind_mounts_exist() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_cli_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose CLI on PATH (neither the `docker compose` plugin nor "
            "`docker-compose`): only the structural checks in this module ran"
        )
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr or result.stdout
