"""MLflow tracking of `stgym train` against the real tracking server (compose/bare/mlflow.sh):
a parent run and one nested run per worker with every metric at every iteration and the
artifacts; the server stopped mid-run (a PRIVATE instance on its own port and database, never
the shared one); the embedded store with no server; bad URIs."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import producers  # noqa: F401  (registers the envs)
from producers import tracking
from producers.runner import train
from producers.train_config import TrainConfig
from stgym import events
from stgym.bus import MemoryBus
from stgym.cli import main as stgym_main

REPO = Path(__file__).resolve().parents[2]
MLFLOW_SH = REPO / "compose" / "bare" / "mlflow.sh"


def _client(uri):
    from producers.registry import client

    return client(uri)


def _children(client, parent):
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return sorted(runs, key=lambda r: r.data.tags["stgym.worker"])


def _training_events(bus) -> dict[str, list[int]]:
    """Iterations of the TrainingEvents on `bus`, per event run id."""
    records = bus.poll([events.TOPIC_TRAINING], group="mlflow-test", max_records=100_000)
    iterations: dict[str, list[int]] = {}
    for record in records:
        event = events.decode(record.value, events.TrainingEvent)
        iterations.setdefault(event.run_id, []).append(event.iteration)
    return iterations


def _assert_tracked(client, run_id, config, iterations):
    """Parent + one child per worker, every metric at every iteration, the artifacts."""
    tracking.wait_all()
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["algorithm"] == config.algorithm
    assert parent.data.params["trainer.batch_size"] == str(config.options.batch_size)
    assert "device.alpha" in parent.data.params
    assert parent.data.metrics["episodes"] == config.episodes
    tags = parent.data.tags
    assert tags["stgym.experiment_id"] == config.experiment
    assert sorted(tags["stgym.run_ids"].split(",")) == sorted(iterations)
    assert tags.get("mlflow.source.git.commit")
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "training_curve.png", "policy", "model"} <= artifacts
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run_id, "model")}
    children = _children(client, parent)
    assert len(children) == config.workers
    for child in children:
        event_run_id = child.data.tags["stgym.run_id"]
        assert child.info.status == "FINISHED"
        for name in tracking.ITERATION_METRICS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, name)]
            assert sorted(steps) == sorted(iterations[event_run_id]), (event_run_id, name)
        assert child.data.metrics["final.episodes"] > 0


@pytest.mark.services
def test_two_worker_kafka_train_is_one_parent_and_two_child_runs(mlflow_url, kafka_bootstrap,
                                                                 unique_id, tmp_path):
    """The spawned-worker path: `stgym train --bus kafka --workers 2`, tracked on the server."""
    experiment = f"mlflow-kafka-{unique_id}"
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "stgym"), "train", "--bus", f"kafka://{kafka_bootstrap}",
         "--workers", "2", "--episodes", "512", "--experiment", experiment, "--mlflow",
         mlflow_url, "--metrics-port", "-1", "--run-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    config = TrainConfig(episodes=512, workers=2, experiment=experiment)
    # cem: 256 episodes per worker in iterations of batch_size (64) episodes
    per_worker = list(range(math.ceil(256 / config.options.batch_size)))
    client = _client(mlflow_url)
    _assert_tracked(client, summary["mlflow_run_id"], config,
                    {run_id: per_worker for run_id in summary["run_ids"]})
    # an event's run id finds its MLflow run (README "MLflow")
    found = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        f"tags.`stgym.run_id` = '{summary['run_ids'][0]}'")
    assert len(found) == 1


@pytest.mark.services
def test_in_process_train_tracks_every_iteration_on_the_server(mlflow_url, unique_id, tmp_path):
    bus = MemoryBus(f"mlflow-{unique_id}")
    config = TrainConfig(algorithm="cem", episodes=640, workers=2, experiment=f"mlflow-{unique_id}",
                         run_dir=str(tmp_path), mlflow=mlflow_url)
    summary = train(config, bus=bus)
    assert summary.ok and summary.mlflow_run_id
    _assert_tracked(_client(mlflow_url), summary.mlflow_run_id, config, _training_events(bus))


def test_embedded_store_needs_no_server(tmp_path, monkeypatch, unique_id):
    """--bus memory with nothing configured: the local SQLite store under the data directory."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("STGYM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("STGYM_DATA_DIR", str(tmp_path / "data"))
    bus = MemoryBus(f"embedded-{unique_id}")
    config = TrainConfig(algorithm="random", episodes=96, workers=2, experiment="embedded",
                         run_dir=str(tmp_path / "run"))
    summary = train(config, bus=bus)
    tracking.wait_all()
    store = f"sqlite:///{tmp_path / 'data' / 'mlflow.sqlite3'}"
    assert (tmp_path / "data" / "mlflow.sqlite3").exists()
    assert (tmp_path / "data" / "mlflow-artifacts").is_dir()  # beside it, not ./mlruns
    _assert_tracked(_client(store), summary.mlflow_run_id, config, _training_events(bus))


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    from stgym import settings

    monkeypatch.delenv("STGYM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = settings.load()
    assert tracking.resolve_uri(None, "memory", s) == s.mlflow_local_uri
    assert tracking.resolve_uri(None, "kafka://127.0.0.1:9092", s) == s.mlflow_url
    assert tracking.resolve_uri("off", "memory", s) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.resolve_uri(None, "memory", s) == "http://mlflow.example:5000"
    assert tracking.resolve_uri("sqlite:////tmp/x.db", "memory", s) == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("uri", ["bogus://x", "http://", "http://host:notaport", "sqlite://"])
def test_bad_uri_is_one_line_exit_2(uri, capsys):
    assert stgym_main(["train", "--episodes", "8", "--mlflow", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stgym train: error: --mlflow") and uri in err[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _untracked_training(uri, experiment, workers, tmp_path, monkeypatch, caplog) -> list[str]:
    """A 64-episode training tracked to `uri`, which never takes it: every event published, no
    run id after a 2 s retry window; returns the tracker's WARNING messages."""
    monkeypatch.setenv("STGYM_MLFLOW_RETRY_S", "2")
    bus = MemoryBus(f"{experiment}-{tmp_path.name}")
    config = TrainConfig(algorithm="random", episodes=64, workers=workers, experiment=experiment,
                         run_dir=str(tmp_path), mlflow=uri)
    with caplog.at_level(logging.WARNING, logger="producers.tracking"):
        summary = train(config, bus=bus)
        tracking.wait_all()
    assert summary.ok and summary.mlflow_run_id is None
    assert len(bus.records(events.TOPIC_EPISODES)) == 64
    return [r.getMessage() for r in caplog.records
            if r.name == "producers.tracking" and r.levelno == logging.WARNING]


def test_store_down_at_start_training_goes_on(tmp_path, monkeypatch, caplog):
    """Nothing listens at the URI: one WARNING names the URI."""
    uri = f"http://127.0.0.1:{_free_port()}"
    warnings = _untracked_training(uri, "down", 2, tmp_path, monkeypatch, caplog)
    assert len(warnings) == 1 and uri in warnings[0]


@pytest.mark.services
def test_wrong_password_is_one_warning_naming_it(mlflow_url, tmp_path, monkeypatch, caplog):
    """The real server refuses a wrong password (401): one WARNING says the credentials were
    refused and where the password comes from."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "stgym")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    warnings = _untracked_training(mlflow_url, "badpw", 1, tmp_path, monkeypatch, caplog)
    assert len(warnings) == 1, warnings
    assert "refuses the credentials of user 'stgym' (HTTP 401)" in warnings[0]
    assert "mlflow.password" in warnings[0] and mlflow_url in warnings[0]


class PrivateMlflow:
    """A private tracking server (compose/bare/mlflow.sh with its own run dir, port and
    database in the shared PostgreSQL cluster) that a test may stop and start."""

    def __init__(self, tmp_path: Path, settings, unique_id: str) -> None:
        self.port = _free_port()
        self.env = {
            **os.environ, "STGYM_RUN_DIR": str(tmp_path / "mlflow-run"),
            "STGYM_MLFLOW_PORT": str(self.port), "STGYM_MLFLOW_DB": f"mlflow_{unique_id}",
            # the shared cluster's credentials stay where the shared run dir keeps them
            "STGYM_SECRETS_DIR": str(settings.secret_path("x").parent),
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.database = f"mlflow_{unique_id}"

    def run(self, action: str) -> None:
        out = subprocess.run(["bash", str(MLFLOW_SH), action], env=self.env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]

    def drop_database(self) -> None:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.settings.postgres_url, connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.database)))
        conn.close()


@pytest.fixture
def private_mlflow(mlflow_url, _postgres_server, stgym_settings, tmp_path, unique_id):
    server = PrivateMlflow(tmp_path, stgym_settings, unique_id)
    server.run("up")
    try:
        yield server
    finally:
        server.run("down")
        server.drop_database()


@pytest.mark.services
def test_server_stopped_mid_run_loses_nothing(private_mlflow, tmp_path, monkeypatch, caplog,
                                              unique_id):
    """The private server goes down while the workers train and comes back: training goes
    on, no event is lost, one WARNING names the URI, and the retried calls (metrics, summary,
    policy, model, end status) all reach MLflow."""
    monkeypatch.setenv("STGYM_MLFLOW_RETRY_S", "180")
    bus = MemoryBus(f"midrun-{unique_id}")
    config = TrainConfig(algorithm="cem", episodes=60000, workers=2,
                         experiment=f"midrun-{unique_id}", run_dir=str(tmp_path / "run"),
                         mlflow=private_mlflow.url)
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=train(config, bus=bus)))
    with caplog.at_level(logging.WARNING, logger="producers.tracking"):
        thread.start()
        client = _client(private_mlflow.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _runs_created(client, config):
            time.sleep(0.2)
        assert thread.is_alive(), "training ended before the server could be stopped"
        private_mlflow.run("down")
        trained_on_while_down = thread.is_alive()
        time.sleep(1)
        private_mlflow.run("up")
        thread.join(timeout=400)
    summary = result["summary"]
    assert summary.ok and summary.mlflow_run_id
    assert trained_on_while_down, "training had ended before the server was down"
    assert len(bus.records(events.TOPIC_EPISODES)) == config.episodes
    warnings = [r for r in caplog.records
                if r.name == "producers.tracking" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and private_mlflow.url in warnings[0].getMessage(), warnings
    _assert_tracked(_client(private_mlflow.url), summary.mlflow_run_id, config,
                    _training_events(bus))


def _runs_created(client, config) -> bool:
    try:
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            return False
        return len(client.search_runs([experiment.experiment_id])) == 1 + config.workers
    except Exception:  # the server may be busy starting: keep polling
        return False
