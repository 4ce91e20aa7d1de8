"""The MLflow model registry for trained policies: register, promote (aliases), evaluate.

A model version is the pyfunc model (producers.policy_model) of one `stgym train` parent run
(its artifacts `model/`). Promotion uses aliases (`NAME@production`); MLflow's stages are
deprecated. `record_evaluation` writes an evaluation onto the version as tags `eval.*`
(write error rate, its one-sided 95 % upper bound, energy per switch, episodes, seed, K).

Promotion rule of `stgym train --register NAME` (`register_and_maybe_promote`): the new
version and the current `@production` are evaluated on the same fresh episodes (6 / WER target
of them, the same seed); the new one becomes `@production` only if it is *certified* — the 95 %
upper bound of its write error rate is at most the WER target — and the current one is not,
or uses more energy per switch. With no `@production` yet, a certified version is promoted.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import sys
from urllib.parse import urlparse

from stgym import settings as settings_module
from stgym.errors import UserError

PRODUCTION = "production"
EVAL_KEYS = ("write_error_rate", "write_error_rate_95_upper", "energy_per_switch_j",
             "episodes", "temperature_k", "success_rate")


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """The MlflowClient of `uri` (tracking and registry; one per process: a SQLite store
    checks its schema when opened) that fails fast — no HTTP retries of its own: tracking
    retries in order itself — and leaves MLflow's INFO lines and run URLs out of the output."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout: --json
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports leave here
    authenticate(uri)
    from mlflow.tracking import MlflowClient

    for absent in ("pyspark", "dbruntime", "IPython"):
        # MLflow looks for a Databricks runtime on every request by importing these: a failed
        # import searches sys.path again each time (~10 ms of CPU); None fails at once.
        if absent not in sys.modules and importlib.util.find_spec(absent) is None:
            sys.modules[absent] = None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def authenticate(uri: str) -> None:
    """The tracking server's basic-auth credentials (settings.mlflow_auth_env) for MLflow's
    HTTP client, which reads them from the environment on every request: only for a server of
    this deployment (the services host or this machine; another server gets no password of
    ours), and only where MLFLOW_TRACKING_USERNAME / _PASSWORD are not set already."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    settings = settings_module.load()
    if parsed.hostname not in {settings.shared_host, settings.host, settings_module.LOOPBACK,
                               "localhost"}:
        return
    for name, value in settings.mlflow_auth_env().items():
        os.environ.setdefault(name, value)


def _mlflow_error(action: str, uri: str, error: Exception) -> UserError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"{action} (MLflow at {uri}): {first[:300]}")


def register(uri: str, run_id: str, name: str):
    """A new version of the registered model `name` from the parent run `run_id`'s model."""
    from mlflow.exceptions import MlflowException

    from producers.policy_model import MODEL_ARTIFACT_PATH

    mlflow_client = client(uri)
    try:
        run = mlflow_client.get_run(run_id)
        if MODEL_ARTIFACT_PATH not in {a.path for a in mlflow_client.list_artifacts(run_id)}:
            raise UserError(f"run {run_id} has no {MODEL_ARTIFACT_PATH}/ artifacts: not a "
                            "`stgym train` parent run with a policy")
        try:
            mlflow_client.get_registered_model(name)
        except MlflowException:
            mlflow_client.create_registered_model(
                name, description="Pulse policies trained by `stgym train`")
        return mlflow_client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}", run_id=run_id,
            tags={"stgym.experiment_id": run.data.tags.get("stgym.experiment_id", ""),
                  "stgym.run_ids": run.data.tags.get("stgym.run_ids", "")},
        )
    except MlflowException as error:
        raise _mlflow_error(f"register run {run_id} as {name}", uri, error) from None


def promote(uri: str, name: str, version: str, alias: str = PRODUCTION) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client(uri).set_registered_model_alias(name, alias, str(version))
    except MlflowException as error:
        raise _mlflow_error(f"promote {name} version {version} to @{alias}", uri, error) from None


def list_models(uri: str) -> list[dict]:
    """Every registered model's versions: name, version, aliases, run id, eval.* tags."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    rows = []
    try:
        for model in mlflow_client.search_registered_models():
            aliases: dict[str, list[str]] = {}
            for alias, version in (model.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            for version in mlflow_client.search_model_versions(f"name = '{model.name}'"):
                rows.append({
                    "name": model.name, "version": version.version,
                    "aliases": sorted(aliases.get(str(version.version), [])),
                    "run_id": version.run_id,
                    **{k: v for k, v in version.tags.items() if k.startswith("eval.")},
                })
    except MlflowException as error:
        raise _mlflow_error("list models", uri, error) from None
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))


def resolve_version(uri: str, model_uri: str):
    """The ModelVersion of models:/NAME@ALIAS or models:/NAME/VERSION."""
    from mlflow.exceptions import MlflowException

    rest = model_uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client(uri).get_model_version_by_alias(name, alias)
        name, _, version = rest.partition("/")
        if not version:
            raise UserError(f"{model_uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return client(uri).get_model_version(name, version)
    except MlflowException as error:
        raise _mlflow_error(f"find {model_uri}", uri, error) from None


def load_policy(uri: str, version):
    """The PulsePolicy inside a registered model version (through `mlflow.pyfunc.load_model`)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    return model.unwrap_python_model().policy


def agent_zip(uri: str, version) -> str | None:
    """An SB3 agent's version: the artifact path of its run's `policy/model-w<N>.zip` (the
    agent its torch model/ acts as); None for a pulse policy's version."""
    zips = [a.path for a in client(uri).list_artifacts(version.run_id, "policy")
            if a.path.endswith(".zip")]
    return zips[0] if zips else None


def record_evaluation(uri: str, version, report: dict, seed: int) -> None:
    """The evaluation `report` (producers.evaluation) as tags eval.* on the model version."""
    mlflow_client = client(uri)
    for key in EVAL_KEYS:
        mlflow_client.set_model_version_tag(
            version.name, version.version, f"eval.{key}", str(report.get(key)))
    mlflow_client.set_model_version_tag(version.name, version.version, "eval.seed", str(seed))


def evaluate_model(uri: str, model_uri: str, episodes: int, temperature: float | None,
                   seed: int) -> dict:
    """Evaluate a registered version and record it there; the report names the version. A
    pulse policy's version is evaluated as `stgym evaluate policy.json`, an SB3 agent's as
    `stgym evaluate model.zip` (the zip of its run)."""
    import tempfile

    import mlflow.artifacts

    from producers.evaluation import evaluate_policy
    from producers.trainers import sb3_module

    version = resolve_version(uri, model_uri)
    artifact = agent_zip(uri, version)
    if artifact is None:
        report = evaluate_policy(load_policy(uri, version), episodes, temperature, seed)
    else:
        with tempfile.TemporaryDirectory() as directory:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=artifact, dst_path=directory,
                tracking_uri=uri)
            report = sb3_module().evaluate_model_file(path, episodes, temperature, seed)
    record_evaluation(uri, version, report, seed)
    return report | {"model": version.name, "version": version.version}


def certified(report: dict, wer_target: float) -> bool:
    return report["write_error_rate_95_upper"] <= wer_target


def beats(candidate: dict, current: dict | None, wer_target: float) -> bool:
    """The promotion rule (module docstring)."""
    if not certified(candidate, wer_target):
        return False
    if current is None or not certified(current, wer_target):
        return True
    energy = candidate["energy_per_switch_j"]
    return energy is not None and energy < (current["energy_per_switch_j"] or math.inf)


def register_and_maybe_promote(uri: str, run_id: str, name: str, wer_target: float,
                               seed: int = 2024) -> dict:
    """`stgym train --register NAME`: register the run's policy, evaluate it and the current
    @production on the same 6 / wer_target episodes, promote by the rule above."""
    from mlflow.exceptions import MlflowException

    episodes = math.ceil(6.0 / wer_target)
    version = register(uri, run_id, name)
    candidate = evaluate_model(uri, f"models:/{name}/{version.version}", episodes, None, seed)
    try:
        current_version = client(uri).get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        current_version = None
    current = None
    if current_version is not None:
        current = evaluate_model(uri, f"models:/{name}/{current_version.version}", episodes,
                                 None, seed)
    promoted = beats(candidate, current, wer_target)
    if promoted:
        promote(uri, name, version.version)
    return {
        "model": name, "version": version.version, "promoted": promoted,
        "episodes": episodes, "wer_target": wer_target, "candidate": candidate,
        "production_before": None if current_version is None else {
            "version": current_version.version, **(current or {})},
    }
