"""compose/bare/render.py: a private stack's Prometheus and Alertmanager configs name only its
own (moved) ports, and the Docker deployment's retention flags are the settings defaults."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import composekit
from stgym import settings as settings_module

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "compose" / "prometheus" / "prometheus.yml",
           REPO / "compose" / "alertmanager" / "alertmanager.yml"]


def render_module():
    return composekit.bare_module("render")


def moved_settings() -> settings_module.Settings:
    """Every port of the settings moved by +20000 (as a private test stack does)."""
    return settings_module.Settings(**{
        field.name: field.default + 20000 for field in dataclasses.fields(settings_module.Settings)
        if field.name.endswith("_port")})


@pytest.mark.parametrize("source", CONFIGS, ids=lambda p: p.name)
def test_every_address_moves_to_the_configured_port(source):
    rendered = render_module().render(source, moved_settings())
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", rendered)}
    assert ports and all(port > 20000 for port in ports), sorted(ports)


def test_prometheus_file_paths_become_absolute():
    config = yaml.safe_load(render_module().render(CONFIGS[0], moved_settings()))
    assert all(Path(path).is_absolute() for path in config["rule_files"])
    assert (REPO / "compose" / "prometheus" / "alert_rules.yml").as_posix() in config["rule_files"]


def test_an_address_that_is_no_settings_port_is_an_error(tmp_path):
    source = tmp_path / "prometheus.yml"
    source.write_text("scrape_configs:\n  - static_configs:\n      - targets: ['127.0.0.1:1234']\n")
    with pytest.raises(ValueError, match="127.0.0.1:1234 is the default of no"):
        render_module().render(source, settings_module.Settings())


def test_docker_deployment_retention_is_the_settings_default():
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    command = compose["services"]["prometheus"]["command"]
    defaults = settings_module.Settings()
    assert f"--storage.tsdb.retention.time={defaults.prometheus_retention_time}" in command
    assert f"--storage.tsdb.retention.size={defaults.prometheus_retention_size}" in command
    assert "--web.enable-admin-api" not in command


def test_prometheus_sends_the_metrics_token_to_stgym_jobs_and_promtool_accepts_it(tmp_path):
    """Stgym's own /metrics (static and file_sd targets alike) get the generated token file;
    exporters and blackbox probes never see it."""
    render = render_module()
    settings = settings_module.Settings(run_dir=str(tmp_path))
    settings_module.ensure_secrets(settings)
    rendered = tmp_path / "prometheus.yml"
    rendered.write_text(render.render(CONFIGS[0], settings))
    jobs = {job["job_name"]: job for job in yaml.safe_load(rendered.read_text())["scrape_configs"]}
    token = {"type": "Bearer", "credentials_file": str(settings.secret_path("metrics.token"))}
    for name in ("stream-processors", "trainers", "kpi-api", "alert-webhook"):
        assert jobs[name]["authorization"] == token, name
    assert jobs["trainers"]["file_sd_configs"] and jobs["stream-processors"]["file_sd_configs"]
    assert not any("authorization" in job for name, job in jobs.items()
                   if name not in render.SCRAPE_TOKEN_JOBS)
    result = subprocess.run(["promtool", "check", "config", str(rendered)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_without_authentication_stay_on_loopback():
    """OpenSearch and Jaeger listen on 127.0.0.1 whatever STGYM_HOST is: Prometheus probes them
    there; every other address moves to the host."""
    render = render_module()
    settings = settings_module.Settings(host="10.0.0.1")
    rendered = render.render(CONFIGS[0], settings)
    assert f"http://127.0.0.1:{settings.opensearch_port}/_cluster/health" in rendered
    assert f"http://127.0.0.1:{settings.jaeger_health_port}/status" in rendered
    loopback = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", rendered)}
    assert loopback == {settings.opensearch_port, settings.jaeger_health_port}
    assert settings.opensearch_url.startswith("http://127.0.0.1:")
    assert settings.jaeger_url.startswith("http://127.0.0.1:")
