"""What a wheel install reads at run time comes from the package, not from a checkout."""
import json
from importlib import resources

import platformdirs

from stgym import settings as settings_module


def test_the_log_index_mappings_are_package_data():
    text = resources.files("stgym").joinpath(
        "data", "opensearch", "logs-component-template.json").read_text()
    assert "mappings" in json.loads(text)["template"]


def test_run_dir_is_the_checkout_s_run_else_the_user_state_dir(monkeypatch, tmp_path):
    assert settings_module._default_run_dir() == str(settings_module.REPO_ROOT / ".run")
    monkeypatch.setattr(settings_module, "REPO_ROOT", tmp_path / "site-packages")
    assert settings_module._default_run_dir() == platformdirs.user_state_dir("stgym")
