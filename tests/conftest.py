"""Shared fixtures: the settings, and one fixture per real service (started by
`compose/bare/services.sh up`, i.e. `make services-up` / `make test`).

Each service fixture proves the service answers its own protocol (the same probes as the
service scripts, compose/bare/check.py) and otherwise FAILS the test naming the service and
its log file. A missing service is never a skip.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import composekit
from stgym import settings as stgym_settings_module

# Trainings in tests are not tracked in MLflow unless a test asks for it (--mlflow / mlflow=,
# tests/producers/test_mlflow_*.py): the embedded store would add seconds to every train().
os.environ.setdefault("STGYM_MLFLOW_TRACKING_URI", "off")


probes = composekit.bare_module("check")


def _require(settings, service: str, log_name: str, address: str, probe) -> None:
    """Run `probe()`; on any failure fail the test with the service, address and log file."""
    try:
        probe()
    except Exception as exc:  # the reason is part of the failure message
        log_file = Path(settings.run_dir) / "logs" / f"{log_name}.log"
        pytest.fail(
            f"{service} does not answer at {address}: {type(exc).__name__}: {exc}. "
            f"Start the services with `make services-up` (or `bash compose/bare/services.sh up`); "
            f"log: {log_file}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def stgym_settings() -> stgym_settings_module.Settings:
    """The Settings (ports, URLs, directories) every service and process uses."""
    return stgym_settings_module.load()


@pytest.fixture
def unique_id() -> str:
    """A short unique string for topic / experiment / consumer-group / app names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def kafka_bootstrap(stgym_settings) -> str:
    """"127.0.0.1:9092" once the broker answers a metadata request."""
    _require(stgym_settings, "Kafka", "kafka", stgym_settings.kafka_bootstrap,
             lambda: probes.check_kafka(stgym_settings))
    return stgym_settings.kafka_bootstrap


@pytest.fixture(scope="session")
def _postgres_server(stgym_settings) -> str:
    _require(stgym_settings, "PostgreSQL", "postgres",
             f"{stgym_settings.host}:{stgym_settings.postgres_port}",
             lambda: probes.check_postgres(stgym_settings))
    return stgym_settings.postgres_url


@pytest.fixture
def postgres_url(_postgres_server, stgym_settings, unique_id):
    """URL of a FRESH empty database (owned by the application role), dropped after the test."""
    import psycopg2
    from psycopg2 import sql

    name = f"test_{unique_id}"
    admin = psycopg2.connect(_postgres_server, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        admin.close()
    yield stgym_settings.postgres_url_for(name)
    admin = psycopg2.connect(_postgres_server, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            # FORCE ends sessions a test left open (PostgreSQL >= 13).
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


@pytest.fixture(scope="session")
def prometheus_url(stgym_settings) -> str:
    """Base URL of the Prometheus server once /-/ready answers 200."""
    url = stgym_settings.prometheus_url
    _require(stgym_settings, "Prometheus", "prometheus", url,
             lambda: probes.check_http(f"{url}/-/ready", None))
    return url


@pytest.fixture(scope="session")
def alertmanager_url(stgym_settings) -> str:
    """Base URL of Alertmanager once /-/ready answers 200."""
    url = stgym_settings.alertmanager_url
    _require(stgym_settings, "Alertmanager", "alertmanager", url,
             lambda: probes.check_http(f"{url}/-/ready", None))
    return url


@pytest.fixture(scope="session")
def opensearch_url(stgym_settings) -> str:
    """Base URL of OpenSearch once cluster health is yellow or green."""
    _require(stgym_settings, "OpenSearch", "opensearch", stgym_settings.opensearch_url,
             lambda: probes.check_opensearch(stgym_settings))
    return stgym_settings.opensearch_url


@pytest.fixture
def collector_address(stgym_settings) -> tuple[str, int]:
    """(host, port) of the collector's Fluent forward receiver, once its health endpoint
    answers and a forward-protocol message is acknowledged. Function-scoped: some tests stop
    and restart the collector."""
    s = stgym_settings

    def probe():
        probes.check_http(f"http://{s.host}:{s.collector_health_port}/", None)
        probes.check_forward(s)

    _require(s, "The log collector (fluent forward)", "collector",
             "%s:%d" % s.collector_forward_address, probe)
    return s.collector_forward_address


@pytest.fixture(scope="session")
def jaeger_url(stgym_settings) -> str:
    """Base URL of Jaeger's query API once it lists services (a query reaching its OpenSearch
    storage) and its OTLP receiver accepts connections."""
    _require(stgym_settings, "Jaeger", "jaeger", stgym_settings.jaeger_url,
             lambda: probes.check_jaeger(stgym_settings))
    return stgym_settings.jaeger_url


@pytest.fixture(scope="session")
def otlp_endpoint(stgym_settings) -> str:
    """The collector's OTLP/HTTP endpoint (http://127.0.0.1:4318) once its OTLP receiver
    accepts an export."""
    _require(stgym_settings, "The collector's OTLP receiver", "collector",
             stgym_settings.collector_otlp_url, lambda: probes.check_otlp(stgym_settings))
    return stgym_settings.collector_otlp_url


@pytest.fixture(scope="session")
def mlflow_url(stgym_settings) -> str:
    """Base URL of the MLflow tracking server once /health answers OK and an experiment search
    reaches its backend store (PostgreSQL)."""
    _require(stgym_settings, "The MLflow tracking server", "mlflow", stgym_settings.mlflow_url,
             lambda: probes.check_mlflow(stgym_settings))
    return stgym_settings.mlflow_url


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance with 2 CPUs for one test module, started as
    `producers.ray_rollouts.start_ray` starts one (its workers on one OpenMP thread)."""
    import ray

    from producers.ray_rollouts import start_ray

    start_ray(2)
    yield
    ray.shutdown()
