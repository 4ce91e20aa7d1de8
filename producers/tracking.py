"""MLflow tracking of `stgym train`: one parent run per training, one nested run per worker.

Where it tracks (`resolve_uri`): `stgym train --mlflow URI|off`, else the setting
`mlflow_tracking_uri` (STGYM_MLFLOW_TRACKING_URI), else MLFLOW_TRACKING_URI, else *auto*: the
local store `settings.mlflow_local_uri` (SQLite under the user data directory, no server) for
an in-process bus (`stgym demo`, `--bus memory`), the tracking server `settings.mlflow_url`
for Kafka.

What a training leaves there. The MLflow experiment is `--experiment`; the parent run
(`<experiment>.<token>`) has the parameters (algorithm, env id and kwargs, device parameters,
seed, budgets, trainer hyperparameters), the final summary as metrics, the tags and the
artifacts `policy/policy.json`, `model/` (the policy as a pyfunc model: producers.policy_model;
for an SB3 agent `policy/model-w<N>.zip` and its policy network as an mlflow.pytorch model),
`training_curve.png` and `config.json` (the resolved TrainConfig) — a copy stays in the run
directory (`mlflow-artifacts/`). Each worker's nested run
(`<experiment>.<token>.w<N>`) has every iteration's metrics with the iteration as step —
`objective`, `success_rate` (the worker's so far), `energy_per_switch_j` and
`switching_time_p50_s` (the iteration's successful episodes), `model_accuracy`,
`learning_rate`, `episodes_per_s` — and its final totals.

Finding one from another by id: a worker run's tag `stgym.run_id` is the `run_id` of every
event that worker published (episodes, trainings, experiments), the parent's `stgym.run_ids`
lists them all, and `stgym.experiment_id` (= the MLflow experiment's name) is the KPI rows'
`experiment`. So `mlflow.search_runs(experiment_names=[kpi_row["experiment"]],
filter_string="tags.`stgym.run_id` = '<event run_id>'")` finds an event's run, and an
MLflow run's tags give the events (`run_id`) and KPI rows (`experiment`) to query.

Cost and failures. Nothing here blocks training on MLflow: the calls run on a background
thread, metrics go in `log_batch` calls of up to 1,000 values (one per flush, not one per
value). When the store does not answer — at start or mid-run — training goes on and publishes
its events, one WARNING names the URI, and every call that failed is retried in order (the run
creations, metrics, summary, policy, model) until it goes through. The end of a training
does not wait for MLflow either: the summary, artifacts and end status go on the same thread
afterwards; `wait_all()` (also run at exit: a `stgym train` process ends once its run is
complete) waits for them, at most `settings.mlflow_retry_s` of retries, then says what was not
logged (the policy file is still on disk).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np

from producers.train_config import worker_episodes
from stgym import settings as settings_module
from stgym.errors import UserError

log = logging.getLogger(__name__)

OFF = "off"
FLUSH_INTERVAL_S = 5.0  # one log_batch per run per flush: each request costs ~10 ms of CPU
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
MAX_PARAMS_PER_BATCH = 100
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
ITERATION_METRICS = (
    "objective", "success_rate", "energy_per_switch_j", "switching_time_p50_s",
    "model_accuracy", "learning_rate", "episodes_per_s",
)
_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def resolve_uri(option: str | None, bus_url: str = "memory",
                settings: settings_module.Settings | None = None) -> str | None:
    """The tracking URI of a training (None: off); UserError naming a bad URI."""
    settings = settings or settings_module.load()
    value = (option or settings.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
             or "").strip()
    if value.lower() == OFF:
        return None
    if not value:
        in_process = bus_url.split(":", 1)[0] == "memory"
        return settings.mlflow_local_uri if in_process else settings.mlflow_url
    return check_uri(value)


def check_uri(uri: str) -> str:
    """`uri` if MLflow can track to it, else a UserError saying what was expected."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0]
    expected = ("expected http(s)://HOST:PORT, sqlite:///PATH, postgresql+psycopg2://…, "
                "file:///PATH or off")
    if scheme not in _SCHEMES:
        raise UserError(f"--mlflow {uri!r}: unknown tracking URI scheme; {expected}")
    if scheme in ("http", "https"):
        try:
            port = parsed.port
        except ValueError:
            port = None
            parsed = parsed._replace(netloc="")
        if not parsed.hostname or (":" in parsed.netloc.rsplit("@", 1)[-1] and port is None):
            raise UserError(f"--mlflow {uri!r}: no host or a bad port; {expected}")
    if scheme in ("sqlite", "file") and not parsed.path.strip("/"):
        raise UserError(f"--mlflow {uri!r}: no path; {expected}")
    return uri


def _http_status(error: Exception) -> int | None:
    status = getattr(error, "get_http_status_code", None)
    return None if status is None else status()


def _refused(error: Exception) -> bool:
    """MLflow answered with a client error (bad value, limit): not a store that is down, and
    not refused credentials (`_unauthorized`)."""
    status = _http_status(error)
    return status is not None and 400 <= status < 500 and not _unauthorized(error)


def _unauthorized(error: Exception) -> bool:
    """The server's basic auth refused our credentials (401) or their rights (403)."""
    return _http_status(error) in (401, 403)


def local_artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database file (MLflow's default without a
    server is ./mlruns of whatever the current directory is); None: the store's default."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(parsed.path[1:]).resolve()  # sqlite:///relative.db, sqlite:////abs.db
    return (database.parent / "mlflow-artifacts").as_uri()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings_module.REPO_ROOT, capture_output=True,
            text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# ---------------------------------------------------------------------- the worker's side

class IterationTap:
    """A trainer's Reporter that forwards to `reporter` (the episode publisher) and hands
    `send(step, metrics)` each iteration's tracking metrics (plain floats, picklable)."""

    def __init__(self, reporter, send: Callable[[int, dict], None]) -> None:
        self.reporter, self.send = reporter, send
        self.episodes_seen = self.successes = 0
        self._batch = None
        self._last = time.perf_counter()

    def episodes(self, batch) -> None:
        self.reporter.episodes(batch)
        self._batch = batch
        self.episodes_seen += len(batch)
        self.successes += int(batch.success.sum())

    def iteration(self, progress) -> None:
        self.reporter.iteration(progress)
        batch, now = self._batch, time.perf_counter()
        self._batch = None
        switched = np.empty(0) if batch is None else batch.switching_time_s[
            batch.success & np.isfinite(batch.switching_time_s)]
        self.send(progress.iteration, {
            "objective": float(progress.objective),
            "success_rate": self.successes / max(self.episodes_seen, 1),
            "energy_per_switch_j": math.nan if batch is None else batch.energy_per_switch_j,
            "switching_time_p50_s": float(np.median(switched)) if len(switched) else math.nan,
            "model_accuracy": float(progress.model_accuracy),
            "learning_rate": float(progress.learning_rate),
            "episodes_per_s": (0 if batch is None else len(batch)) / max(now - self._last, 1e-9),
        })
        self._last = now


# ---------------------------------------------------------------------- the parent's side

@dataclasses.dataclass
class _Op:
    """One MLflow call, retried until it goes through. `run` names the run ("parent", "w0")."""

    kind: str
    run: str
    payload: object = None


class Tracker:
    """The MLflow side of one training; every method returns at once (see module docstring).

    >>> tracker = Tracker("sqlite:////tmp/mlflow.db", config, token)  # doctest: +SKIP
    >>> tracker.iteration(0, step, metrics); tracker.finish(summary, results)  # doctest: +SKIP
    """

    def __init__(self, uri: str, config, token: str) -> None:
        from producers.rollout import episode_task

        self.uri, self.config, self.token = uri, config, token
        self.settings = settings_module.load()
        self.run_ids: dict[str, str] = {}  # "parent", "w0", ... -> MLflow run id
        self.history: dict[int, list[tuple[int, dict]]] = {}  # worker index -> (step, metrics)
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._pending: list[_Op] = []
        self._client = None
        self._warned = False
        self._summary = None
        self._failure: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by finish: flush now
        names = {i: f"{config.experiment}.{token}.w{config.first_worker + i}"
                 for i in range(config.workers)}
        self.event_run_ids = names
        task = episode_task(config.env_id, config.env_kwargs)
        self._put("experiment", "parent")
        self._put("create", "parent", {
            "name": f"{config.experiment}.{token}",
            "tags": self._tags(list(names.values())),
        })
        self._put("params", "parent", self._params(config, task))
        for index, name in names.items():
            self._put("create", f"w{index}", {
                "name": name, "parent": "parent",
                "tags": {"stgym.experiment_id": config.experiment, "stgym.run_id": name,
                         "stgym.worker": f"w{config.first_worker + index}",
                         "stgym.host": socket.gethostname()},
            })
            self._put("params", f"w{index}", {
                "worker": f"w{config.first_worker + index}",
                "seed_sequence": f"[{config.seed}, {config.first_worker + index}]",
                "episodes": worker_episodes(config, index),
            })
        self._thread = threading.Thread(target=self._loop, name="stgym-mlflow", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side

    def iteration(self, index: int, step: int, metrics: dict) -> None:
        """One worker iteration's metrics (buffered; sent with the next flush)."""
        self.history.setdefault(index, []).append((step, metrics))
        millis = int(time.time() * 1000)
        self._put("metrics", f"w{index}", [(k, float(v), millis, step) for k, v in metrics.items()])

    def finish(self, summary, results: dict) -> str | None:
        """Queue the summary, per-worker totals, artifacts and end status, and return: they
        are sent on the tracking thread after the training (`wait`, `wait_all`; at the latest
        when the process exits). Returns the parent run id (None while it is not created:
        then `summary.mlflow_run_id` is set when it is)."""
        from producers.worker_stats import WorkerStats, summarise

        millis = int(time.time() * 1000)
        numbers = {k: v for k, v in summary.as_dict().items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
        numbers |= {f"policy.{k}": v for k, v in summary.policy_metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for index, result in results.items():
            totals = summarise(WorkerStats(**result["stats"]))
            self._put("metrics", f"w{index}", [
                (f"final.{k}", float(v), millis, 0) for k, v in totals.items()
            ])
        self._put("summary", "parent", (
            [(k, float(v), millis, 0) for k, v in numbers.items()],
            {"stgym.run_ids": ",".join(summary.run_ids),
             "stgym.failed_workers": ",".join(summary.failed_workers)},
        ))
        # The run's artifact tree, sent in one log_artifacts call (a copy stays in the run
        # directory): config.json, policy/ here; training_curve.png, model/ on the thread.
        artifacts = Path(summary.run_dir) / "mlflow-artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "config.json").write_text(json.dumps(
            dataclasses.asdict(self.config) | {"mlflow": self.uri}, indent=2, default=str
        ) + "\n")
        if summary.policy_path:
            (artifacts / "policy").mkdir(exist_ok=True)
            shutil.copy(summary.policy_path, artifacts / "policy")
        self._put("artifacts", "parent", str(artifacts))
        status = "FINISHED" if summary.ok else "FAILED"
        for index in range(self.config.workers):
            self._put("end", f"w{index}", "FINISHED" if index in results else "FAILED")
        self._put("end", "parent", status)
        self._summary = summary  # its mlflow_run_id is set once the parent run exists
        self._queue.put(None)  # the end marker: the loop stops once everything went through
        self._wake.set()
        _unfinished.add(self)
        return self.run_ids.get("parent")

    def wait(self) -> None:
        """Block until everything queued reached MLflow (at most settings.mlflow_retry_s of
        retries after the end of the training while it does not answer; then an ERROR says
        what was not logged)."""
        self._thread.join(timeout=self.settings.mlflow_retry_s + 60)
        _unfinished.discard(self)
        if self._pending or not self._queue.empty():
            self._stop.set()
            kinds = sorted({op.kind for op in self._pending})
            log.error(
                "MLflow at %s: %s not logged after retrying %d s (%s); the policy is in %s",
                self.uri, ", ".join(kinds) or "some calls", self.settings.mlflow_retry_s,
                self._failure, self._summary.policy_path,
            )

    def _put(self, kind: str, run: str, payload=None) -> None:
        self._queue.put(_Op(kind, run, payload))

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        """Send what is queued, then sleep until the next flush (FLUSH_INTERVAL_S; `finish`
        wakes it at once): one log_batch per run and flush, never one per iteration."""
        ending_since = None
        attempt = 0
        while not self._stop.is_set():
            if self._drain() and ending_since is None:
                ending_since = time.monotonic()
            if self._send():
                attempt = 0
                pause = FLUSH_INTERVAL_S
            else:
                pause = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
            if ending_since is not None and not self._pending and self._queue.empty():
                return
            if ending_since is not None and (
                    time.monotonic() - ending_since > self.settings.mlflow_retry_s):
                return
            if ending_since is None or self._pending:
                self._wake.wait(pause)
                self._wake.clear()

    def _drain(self) -> bool:
        """Move queued ops to the pending list; True once the end marker was seen."""
        ended = False
        try:
            while True:
                op = self._queue.get_nowait()
                if op is None:
                    ended = True
                else:
                    self._pending.append(op)
        except queue.Empty:
            return ended

    def _send(self) -> bool:
        """Send the pending ops in order; False at the first that fails (kept for a retry)."""
        try:
            client = self._connect()
            while self._pending:
                op = self._pending[0]
                if op.kind == "metrics":
                    self._send_metrics(client, op.run)
                else:
                    self._execute(client, op)
                    self._pending.pop(0)
        except Exception as error:  # any store failure: training goes on, retried later
            if _refused(error):  # the store answered "no" (4xx): retrying cannot help
                op = self._pending.pop(0)
                log.warning("MLflow at %s refused %s of %s: %s", self.uri, op.kind, op.run,
                            str(error).splitlines()[0][:300])
                return True
            self._failure = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            if not self._warned:
                self._warned = True
                if _unauthorized(error):
                    log.warning(
                        "MLflow at %s refuses the credentials of user %r (HTTP %d): its "
                        "password is settings.mlflow_password (STGYM_MLFLOW_PASSWORD) or the "
                        "file %s; training goes on, tracking retries", self.uri,
                        self.settings.mlflow_username, _http_status(error),
                        self.settings.secret_path(settings_module.MLFLOW_PASSWORD))
                else:
                    log.warning("MLflow at %s does not answer (%s): training goes on, "
                                "tracking retries", self.uri, self._failure)
            return False
        if self._warned and self._failure:
            log.info("MLflow at %s answers again: the retried calls went through", self.uri)
            self._failure = None
        return True

    def _connect(self):
        if self._client is None:
            from producers.registry import client

            self._client = client(self.uri)
        return self._client

    def _send_metrics(self, client, run: str) -> None:
        """The leading metric ops of `run` as log_batch calls of up to 1,000 values."""
        from mlflow.entities import Metric

        values = []
        while (self._pending and self._pending[0].kind == "metrics"
               and self._pending[0].run == run and len(values) < MAX_METRICS_PER_BATCH):
            values.extend(self._pending[0].payload)
            self._pending.pop(0)
        try:
            for start in range(0, len(values), MAX_METRICS_PER_BATCH):
                chunk = values[start:start + MAX_METRICS_PER_BATCH]
                client.log_batch(self.run_ids[run], metrics=[Metric(*v) for v in chunk])
        except Exception:
            self._pending.insert(0, _Op("metrics", run, values))
            raise

    def _execute(self, client, op: _Op) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if op.kind == "experiment":
            experiment = client.get_experiment_by_name(self.config.experiment)
            self.experiment_id = (experiment.experiment_id if experiment else
                                  client.create_experiment(self.config.experiment,
                                                           local_artifact_location(self.uri)))
        elif op.kind == "create":
            tags = dict(op.payload["tags"]) | {"mlflow.runName": op.payload["name"]}
            if "parent" in op.payload:
                tags["mlflow.parentRunId"] = self.run_ids[op.payload["parent"]]
            run = client.create_run(self.experiment_id, tags=tags, run_name=op.payload["name"])
            self.run_ids[op.run] = run.info.run_id
            if op.run == "parent" and self._summary is not None:
                self._summary.mlflow_run_id = run.info.run_id
        elif op.kind == "params":
            items = [Param(k, str(v)[:6000]) for k, v in op.payload.items()]
            for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_ids[op.run],
                                 params=items[start:start + MAX_PARAMS_PER_BATCH])
        elif op.kind == "summary":
            metrics, tags = op.payload
            client.log_batch(self.run_ids[op.run], metrics=[Metric(*v) for v in metrics],
                             tags=[RunTag(k, str(v)) for k, v in tags.items()])
        elif op.kind == "artifacts":
            artifacts = Path(op.payload)
            if not (artifacts / "training_curve.png").exists():
                self._training_curve(artifacts / "training_curve.png")
            self._add_model(artifacts)
            client.log_artifacts(self.run_ids[op.run], op.payload)
        elif op.kind == "end":
            client.set_terminated(self.run_ids[op.run], op.payload)

    # ------------------------------------------------------------------ contents

    @staticmethod
    def _add_model(artifacts: Path) -> None:
        """model/: the pyfunc model of a pulse policy (policy/*.json), or the torch model
        (mlflow.pytorch) of an SB3 agent's policy network (policy/*.zip, which stays there as
        the SB3 model). Made once, on this thread: it builds an env."""
        from producers.policy_model import MODEL_ARTIFACT_PATH, save_policy_model

        target = artifacts / MODEL_ARTIFACT_PATH
        if target.exists():
            return
        partial = artifacts.parent / f"{MODEL_ARTIFACT_PATH}.partial"  # a failed save: not logged
        shutil.rmtree(partial, ignore_errors=True)
        policies = sorted((artifacts / "policy").glob("*.json"))
        agents = sorted((artifacts / "policy").glob("*.zip"))
        if policies:
            save_policy_model(str(policies[0]), str(partial))
        elif agents:
            from producers.trainers import sb3_module

            sb3_module().save_torch_model(str(agents[0]), str(partial))
        else:
            return
        partial.rename(target)

    def _tags(self, event_run_ids: list[str]) -> dict:
        tags = {"stgym.experiment_id": self.config.experiment, "stgym.token": self.token,
                "stgym.run_ids": ",".join(event_run_ids), "stgym.host": socket.gethostname(),
                "stgym.bus": self.config.bus_url.split("://", 1)[0]}
        commit = _git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags

    @staticmethod
    def _params(config, task) -> dict:
        params = {
            "algorithm": config.algorithm, "env_id": config.env_id,
            "env_kwargs": json.dumps(config.env_kwargs, sort_keys=True),
            "episodes": config.episodes, "workers": config.workers,
            "first_worker": config.first_worker, "seed": config.seed,
            "temperature_k": task.temperature, "control_interval_s": task.control_interval
            if hasattr(task, "control_interval") else None,
        }
        params |= {f"device.{k}": v for k, v in dataclasses.asdict(task.params).items()}
        params |= {f"trainer.{k}": v for k, v in dataclasses.asdict(config.options).items()}
        return params

    def _training_curve(self, path: Path) -> None:
        """Objective and success rate per iteration of every worker (none without matplotlib
        or without an iteration)."""
        if not self.history:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
        for index, rows in sorted(self.history.items()):
            steps = [step for step, _ in rows]
            label = f"w{self.config.first_worker + index}"
            top.plot(steps, [m["objective"] for _, m in rows], label=label)
            bottom.plot(steps, [m["success_rate"] for _, m in rows], label=label)
        top.set_ylabel("objective")
        bottom.set_ylabel("success rate")
        bottom.set_xlabel("iteration")
        top.legend(loc="lower right")
        top.set_title(f"{self.config.algorithm} on {self.config.env_id}: {self.config.experiment}")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)


_unfinished: set[Tracker] = set()


def wait_all() -> None:
    """Wait for every finished training's tracking to reach MLflow (see Tracker.wait); runs
    at exit too, so a `stgym train` process ends after its run is complete in MLflow."""
    for tracker in list(_unfinished):
        tracker.wait()


# At exit, before concurrent.futures refuses new work (MLflow's stores use thread pools): its
# exit hook is a threading one, and those run last-registered first.
import concurrent.futures.thread  # noqa: E402  (registered before ours, so it runs after)

threading._register_atexit(wait_all)


def open_tracker(config, token: str) -> Tracker | None:
    """The Tracker of a training, or None when tracking is off (config.mlflow / settings)."""
    uri = resolve_uri(config.mlflow, config.bus_url)
    return None if uri is None else Tracker(uri, config, token)
