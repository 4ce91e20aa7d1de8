"""The MLflow clients' basic-auth credentials (producers/registry.py `authenticate`): from
settings, only for a tracking server of this deployment, never over ones already set. The live
server's side (401 without them): compose/bare/check.py mlflow, tests/ops/test_multihost.py."""
from __future__ import annotations

import os

import pytest

from producers import registry
from stgym.errors import UserError

NAMES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in NAMES:  # setenv first: monkeypatch then removes what authenticate() sets
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setenv("STGYM_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("STGYM_SERVICES_HOST", "10.9.0.1")
    monkeypatch.delenv("STGYM_MLFLOW_PASSWORD", raising=False)
    return tmp_path


def credentials() -> tuple:
    return tuple(os.environ.get(name) for name in NAMES)


def test_sent_only_to_a_server_of_this_deployment(no_credentials):
    (no_credentials / "mlflow.password").write_text("s3cret\n")
    for uri in ("http://mlflow.example:5000", "sqlite:///tmp/mlflow.db", "file:///tmp/mlruns"):
        registry.authenticate(uri)
        assert credentials() == (None, None), uri
    registry.authenticate("http://10.9.0.1:5000")  # the services host
    assert credentials() == ("stgym", "s3cret")


def test_loopback_server_and_credentials_already_set(no_credentials, monkeypatch):
    (no_credentials / "mlflow.password").write_text("s3cret\n")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hers")
    registry.authenticate("http://127.0.0.1:5000")
    assert credentials() == ("alice", "hers")


def test_missing_password_file_is_an_error_naming_it(no_credentials):
    with pytest.raises(UserError, match="mlflow.password not found"):
        registry.authenticate("http://localhost:5000")
    assert credentials() == (None, None)
