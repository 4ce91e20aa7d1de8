"""Security on a PRIVATE PostgreSQL + Kafka (compose/bare scripts, own run dir and ports):
the generated credentials are private files, an unauthenticated or wrong-password client is
refused by PostgreSQL and by Kafka's SASL listener, and the whole pipeline over SASL/SCRAM —
`stgym train` -> Kafka -> `stgym stream` (Faust) -> PostgreSQL — counts every episode exactly."""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from sinks.factory import open_sink
from stgym import settings as settings_module
from streams import workload

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]
SERVICES = ["postgres", "kafka"]


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory):
    """Env of a private PostgreSQL + Kafka; stopped and its data removed at the end."""
    run_dir = tmp_path_factory.mktemp("secure-run")
    env = dict(os.environ, STGYM_RUN_DIR=str(run_dir), STGYM_POSTGRES_PORT="55441",
               STGYM_KAFKA_PORT="59191", STGYM_KAFKA_CONTROLLER_PORT="59192",
               STGYM_KAFKA_SASL_PORT="59193", STGYM_KAFKA_HEAP="256m")
    script = ["bash", str(REPO / "compose" / "bare" / "services.sh")]
    try:
        up = subprocess.run([*script, "up", *SERVICES], env=env, capture_output=True, text=True,
                            timeout=400)
        assert up.returncode == 0, f"private PostgreSQL/Kafka did not start:\n{up.stderr[-3000:]}"
        yield env
    finally:
        # clean: stop and remove the data (also what lives under /var/tmp for the postgres user)
        subprocess.run([*script, "clean"], env=env, capture_output=True, timeout=180)


def settings_of(env: dict, **changes) -> settings_module.Settings:
    fields = {f.name for f in dataclasses.fields(settings_module.Settings)}
    values = {k[len("STGYM_"):].lower(): v for k, v in env.items() if k.startswith("STGYM_")}
    base = settings_module.Settings(**{k: (int(v) if k.endswith("_port") else v)
                                       for k, v in values.items() if k in fields})
    return dataclasses.replace(base, **changes)


def test_credentials_are_generated_private_files(private_stack):
    s = settings_of(private_stack)
    folder = s.secret_path(settings_module.POSTGRES_PASSWORD).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in settings_module.SECRETS:
        path = s.secret_path(name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert len(path.read_text().strip()) >= 32
    pattern = "stgym:stgym@|password[^\\n]*= *\"stgym\""
    tracked = subprocess.run(["git", "grep", "-n", "-I", "-E", pattern, "--", ".",
                              f":!{Path(__file__).relative_to(REPO)}"],  # this file names it
                             cwd=REPO, capture_output=True, text=True).stdout
    assert not tracked, f"a default password is in the repository:\n{tracked}"


def test_postgres_refuses_missing_and_wrong_passwords(private_stack):
    s = settings_of(private_stack)
    base = f"postgresql://{s.postgres_user}@127.0.0.1:{s.postgres_port}/{s.postgres_db}"
    with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
        psycopg2.connect(base, connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(base, password="stgym", connect_timeout=5)
    psycopg2.connect(s.postgres_url, connect_timeout=5).close()


def _admin(s, **options):
    return KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=4000,
                            bootstrap_timeout_ms=4000, client_id="stgym-security-test", **options)


def test_kafka_sasl_listener_refuses_unauthenticated_clients(private_stack):
    s = settings_of(private_stack, kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(KafkaError):
        _admin(s).list_topics()
    wrong = dict(s.kafka_client_options(), sasl_plain_password="not-the-password")
    with pytest.raises(KafkaError):
        _admin(s, **wrong).list_topics()
    log = (Path(s.run_dir) / "logs" / "kafka.log").read_text()
    assert "Failed authentication" in log
    admin = _admin(s, **s.kafka_client_options())
    try:
        admin.list_topics()
    finally:
        admin.close()


def test_authenticated_pipeline_counts_every_episode_once(private_stack, tmp_path, monkeypatch):
    env = dict(private_stack, STGYM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT")
    for key, value in env.items():
        if key.startswith("STGYM_"):
            monkeypatch.setenv(key, value)  # the stream worker child reads its settings here
    s = settings_of(env)
    bus_url = f"kafka://{s.kafka_bootstrap}"
    experiment = f"sasl-{os.getpid()}"
    port = workload.free_port()
    worker = workload.start_worker(bus_url, s.postgres_url, port, 0, f"stgym-sasl-{os.getpid()}",
                                  str(tmp_path / "stream.log"))
    sink = open_sink(s.postgres_url)
    try:
        workload.wait_workers_ready([worker], [port], sink, timeout_s=180)
        train = subprocess.run(
            [sys.executable, "-m", "stgym.cli", "train", "--algo", "random", "--episodes", "600",
             "--workers", "2", "--experiment", experiment, "--bus", bus_url,
             "--metrics-port", "-1", "--mlflow", "off", "--run-dir", str(tmp_path / "train"),
             "--json"], env=env, capture_output=True, text=True, timeout=300)
        assert train.returncode == 0, train.stderr[-3000:]
        ledgered = sum(len(p.read_text().split()) for p in (tmp_path / "train").glob("*.ledger"))
        assert ledgered == 600
        workload.wait_until(lambda: workload.stored_count(sink, experiment) >= 600, 180,
                           what="all 600 episodes stored")
        time.sleep(2.0)  # nothing beyond the 600 arrives late
        assert workload.stored_count(sink, experiment) == 600
    finally:
        workload.stop_all([worker], sink)
