"""Dashboards as code: committed JSON matches the generator; panels and variables are complete
and every panel's PromQL is valid (promtool). Tests/test_ops_pipeline_live.py runs the same
queries against a live Prometheus scraping the real stream pipeline."""
from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from stgym import dashboards

VALUES = {"experiment": "exp-1", "device_type": "stt-pma", "algorithm": "cem",
          "datasource": "prometheus"}


def committed() -> dict[str, dict]:
    return {name: json.loads((dashboards.OUTPUT_DIR / name).read_text())
            for name in dashboards.DASHBOARDS}


def test_committed_json_is_what_the_code_generates():
    assert dashboards.main(["--check"]) == 0


def test_overview_and_training_panels_and_template_variables():
    boards = committed()
    titles = {name: [p["title"] for p in board["panels"]] for name, board in boards.items()}
    for required in ("Episode rate", "Success rate", "Energy per switch",
                     "Switching time p50 / p95 / p99", "Simulation steps/s", "Memory",
                     "GPU utilisation", "Firing alerts"):
        assert required in titles["overview.json"]
    for required in ("Training vs validation objective", "Learning rate", "Model accuracy",
                     "Success rate by algorithm"):
        assert required in titles["training-performance.json"]
    for board in boards.values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) == {"datasource", "experiment", "device_type", "algorithm"}
        for name in dashboards.VARIABLES:
            assert variables[name]["multi"] and variables[name]["includeAll"]
            assert variables[name]["allValue"] == ".*"
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_query_is_valid_promql(tmp_path):
    rules = [
        {"record": f"check:panel_{i}", "expr": dashboards.substitute(expr, VALUES)}
        for i, (_, expr) in enumerate(
            q for board in committed().values() for q in dashboards.panel_queries(board))
    ]
    assert len(rules) >= 20
    path = tmp_path / "panel_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's prometheus"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_substitution_handles_both_variable_syntaxes():
    assert dashboards.substitute('x{a=~"$experiment",b="${algorithm}"}', VALUES) == \
        'x{a=~"exp-1",b="cem"}'
