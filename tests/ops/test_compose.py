"""compose/docker-compose.yml: valid YAML, every service of the pipeline, every file it mounts
or builds from exists in the repository, and its Prometheus/Alertmanager configs pass the
real `promtool check config` / `amtool check-config`."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"

REQUIRED_SERVICES = {
    "kafka", "postgres", "prometheus", "alertmanager", "grafana", "fluentd", "elasticsearch",
    "stream-processor", "trainer", "kpi-api",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open() as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "docker-compose.yml is not a YAML mapping"
    return document


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount (a named volume has no ./ or / prefix)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            if not source.startswith((".", "/")):
                continue  # named volume
        mounts.append(((COMPOSE_DIR / source).resolve(), target))
    return mounts


def host_path(service: dict, container_path: str) -> Path:
    """The repository file behind `container_path` through the service's bind mounts."""
    for source, target in sorted(bind_mounts(service), key=lambda m: -len(m[1])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not under any bind mount of the service")


def flag_value(service: dict, flag: str) -> str:
    command = service.get("command", [])
    args = command if isinstance(command, list) else command.split()
    for arg in args:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no {flag}= in the command {args}")


def test_compose_names_every_service(compose):
    services = compose.get("services")
    assert isinstance(services, dict)
    assert REQUIRED_SERVICES <= set(services), REQUIRED_SERVICES - set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"


def test_every_mounted_config_exists(compose):
    checked = 0
    for name, service in compose["services"].items():
        for source, _target in bind_mounts(service):
            assert source.exists(), f"service {name} mounts {source}, missing from the repository"
            assert source.is_relative_to(REPO), f"service {name} mounts {source} outside the repository"
            checked += 1
    assert checked >= 6


def test_every_build_context_and_dockerfile_exists(compose):
    builds = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert {"stream-processor", "trainer"} <= set(builds)
    for name, build in builds.items():
        context = (COMPOSE_DIR / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_fluentd_forwards_to_elasticsearch(compose):
    service = compose["services"]["fluentd"]
    conf = host_path(service, "/fluentd/etc/fluent.conf").read_text()
    assert "@type forward" in conf and "port 24224" in conf
    assert "@type elasticsearch" in conf and "port 9200" in conf


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `bash compose/bare/services.sh install prometheus "
                    f"alertmanager` installs it (make test does)")
    return path


@pytest.mark.services
def test_prometheus_configs_pass_promtool(compose):
    configs = []
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith("prom/prometheus"):
            configs.append(host_path(service, flag_value(service, "--config.file")))
    assert configs, "no Prometheus service in the compose file"
    promtool = _tool("promtool")
    for config in configs:
        result = subprocess.run([promtool, "check", "config", str(config)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"promtool check config {config}:\n{result.stdout}{result.stderr}"
        # promtool also checked every rule file the config names
        assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.services
def test_alertmanager_config_passes_amtool(compose):
    service = compose["services"]["alertmanager"]
    config = host_path(service, flag_value(service, "--config.file"))
    result = subprocess.run([_tool("amtool"), "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"amtool check-config {config}:\n{result.stdout}{result.stderr}"
