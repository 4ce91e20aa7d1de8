"""Render a committed config file for this machine's settings.

Usage: python compose/bare/render.py SOURCE OUTPUT

compose/prometheus/prometheus.yml and compose/alertmanager/alertmanager.yml name every
address as 127.0.0.1:<default port of stgym/settings.py>, so docker-compose mounts them as
they are. The bare-machine scripts start the services on a rendered copy instead: every
address moved to the configured host and port (STGYM_<FIELD>_PORT), and every file a
Prometheus config names (rule_files, file_sd_configs) made absolute, as the copy lives under
$STGYM_RUN_DIR. A private stack with moved ports therefore never scrapes, alerts or notifies
the shared one. An address that is no settings port is an error, so the files cannot drift.
Credentials are added as files of settings.secrets_dir: Alertmanager's webhooks send the
webhook's bearer token, Prometheus's scrapes of stgym's own /metrics the metrics token (which
stgym/httpserver.py asks of every peer but loopback).
"""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import yaml

from stgym import settings as settings_module

# Services that run several processes on consecutive ports from the configured one
# (stream workers 6066, 6067, ...; trainer workers 8000, 8001, ...).
WORKER_PORT_FIELDS = ("stream_web_port", "trainer_metrics_port")
WORKER_PORT_SPAN = 8
ADDRESS = re.compile(r"(?<![\d.])127\.0\.0\.1:(\d+)")
# The scrape jobs of stgym's own /metrics (stgym/httpserver.py): they send the metrics token.
# `pods` is the Kubernetes config's (compose/k8s/base/prometheus-config.yml).
SCRAPE_TOKEN_JOBS = ("stream-processors", "trainers", "kpi-api", "alert-webhook", "pods")
# Services without authentication of their own listen on the loopback of the services host
# whatever settings.host is (compose/bare/opensearch.sh, compose/jaeger/config.yaml): their
# addresses keep 127.0.0.1.
LOOPBACK_PORT_FIELDS = ("opensearch_port", "jaeger_health_port", "jaeger_query_port",
                        "jaeger_otlp_grpc_port", "jaeger_otlp_http_port")


def _port_fields() -> dict[int, str]:
    return {field.default: field.name for field in dataclasses.fields(settings_module.Settings)
            if field.name.endswith("_port")}


def port_for(default_port: int, settings: settings_module.Settings) -> int:
    """The configured port of the settings field whose default is `default_port`."""
    defaults = _port_fields()
    if default_port in defaults:
        return getattr(settings, defaults[default_port])
    for name in WORKER_PORT_FIELDS:
        base = next(f.default for f in dataclasses.fields(settings_module.Settings) if f.name == name)
        if 0 < default_port - base < WORKER_PORT_SPAN:
            return getattr(settings, name) + default_port - base
    raise ValueError(f"127.0.0.1:{default_port} is the default of no *_port in stgym/settings.py")


def address_for(default_port: int, settings: settings_module.Settings) -> str:
    """Where the service of `default_port` listens: loopback or settings.host."""
    return (settings_module.LOOPBACK if _port_fields().get(default_port) in LOOPBACK_PORT_FIELDS
            else settings.host)


def _rewrite(node, settings, base_dir: Path, key: str | None = None):
    if isinstance(node, dict):
        return {k: _rewrite(v, settings, base_dir, k) for k, v in node.items()}
    if isinstance(node, list):
        if key == "files":  # file_sd: targets/ is the run dir's (compose/bare/hosts.py)
            return [str(Path(settings.run_dir) / item) if item.startswith("targets/")
                    else str(base_dir / item) for item in node]
        if key in ("rule_files", "files"):
            return [str(base_dir / item) for item in node]
        return [_rewrite(item, settings, base_dir) for item in node]
    if isinstance(node, str):
        return ADDRESS.sub(lambda m: f"{address_for(int(m.group(1)), settings)}:"
                                     f"{port_for(int(m.group(1)), settings)}", node)
    return node


def with_webhook_token(config: dict, settings: settings_module.Settings) -> dict:
    """An Alertmanager config whose webhooks send the generated bearer token
    (secrets_dir/alert-webhook.token) that `stgym alerts serve` checks."""
    token = str(settings.secret_path(settings_module.ALERT_WEBHOOK_TOKEN))
    for receiver in config.get("receivers", []):
        for webhook in receiver.get("webhook_configs", []):
            webhook.setdefault("http_config", {})["authorization"] = {
                "type": "Bearer", "credentials_file": token}
    return config


def with_scrape_token(config: dict, settings: settings_module.Settings) -> dict:
    """A Prometheus config whose scrapes of stgym's /metrics send the generated bearer token
    (secrets_dir/metrics.token)."""
    token = str(settings.secret_path(settings_module.METRICS_TOKEN))
    for job in config.get("scrape_configs", []):
        if job.get("job_name") in SCRAPE_TOKEN_JOBS:
            job["authorization"] = {"type": "Bearer", "credentials_file": token}
    return config


def render(source: Path, settings: settings_module.Settings) -> str:
    """The YAML of `source` with moved addresses, absolute file paths and credential files."""
    config = with_scrape_token(with_webhook_token(yaml.safe_load(source.read_text()), settings),
                               settings)
    header = f"# Rendered from {source} by compose/bare/render.py: do not edit.\n"
    return header + yaml.safe_dump(_rewrite(config, settings, source.resolve().parent),
                                   sort_keys=False)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, output = Path(argv[0]), Path(argv[1])
    try:
        text = render(source, settings_module.load())
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"render: {source}: {error}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
