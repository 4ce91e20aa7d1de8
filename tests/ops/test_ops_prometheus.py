"""Prometheus and Alertmanager configuration: syntax, rule unit tests, required alerts."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "compose" / "prometheus"
ALERTMANAGER_CONFIG = REPO / "compose" / "alertmanager" / "alertmanager.yml"
DEPLOYMENT_RULES = REPO / "compose" / "grafana" / "prometheus" / "grafana.rules.yml"
REQUIRED_ALERTS = {
    "HighErrorRate", "LowSuccessRate", "LowSuccessRateConfident", "HighMemoryUsage",
    "SlowSimulation", "DatabaseDown", "KafkaDown", "HighDiskUsage",
    "Watchdog", "PrometheusDown", "AlertmanagerDown", "CollectorDown", "SearchStoreDown",
    "GrafanaDown", "StreamWorkerDown", "ConsumerLagHigh", "DeadLetterRate",
}


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    tool = shutil.which(argv[0])
    assert tool, f"{argv[0]} not found: install Debian's prometheus / prometheus-alertmanager"
    return subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=120,
                          cwd=PROMETHEUS_DIR)


def alert_rules() -> list[dict]:
    """The bare-machine rules and the Docker deployment's own (GrafanaDown)."""
    groups = [group for path in (PROMETHEUS_DIR / "alert_rules.yml", DEPLOYMENT_RULES)
              for group in yaml.safe_load(path.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_config_and_rules():
    result = run_tool("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_tool("promtool", "check", "rules", "recording_rules.yml", "alert_rules.yml",
                      str(DEPLOYMENT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = run_tool("promtool", "test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_annotations_runbook_and_firing_and_silent_cases():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in rules:
        name = rule["alert"]
        # The always-firing Watchdog is a heartbeat, routed to the dead man's switch only.
        assert rule["labels"]["severity"] in (("none",) if name == "Watchdog" else ("critical", "warning")), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert anchor == name.lower() and f"## {name}" in runbooks, name
        own = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in own), f"{name} has no firing case"
        assert name == "Watchdog" or any(not case["exp_alerts"] for case in own), f"{name} has no silent case"


def test_thresholds_match_the_operations_issue():
    expressions = {rule["alert"]: (rule["expr"], rule.get("for")) for rule in alert_rules()}
    assert expressions["LowSuccessRate"] == ("success_rate < 0.8", "10m")
    assert expressions["LowSuccessRateConfident"] == ("write_error_rate_lower_bound > 0.2", "10m")
    assert expressions["HighErrorRate"] == ("stgym:events_rejected:ratio_rate5m > 0.05", "5m")
    assert expressions["HighMemoryUsage"] == ("memory_usage_bytes / 1024^3 > 6", "5m")
    assert expressions["SlowSimulation"] == ("simulation_steps_per_second < 100", "5m")
    assert expressions["HighDiskUsage"][0].endswith("> 0.9")


def test_amtool_check_config_and_routing_by_severity():
    tool = shutil.which("amtool")
    assert tool, "amtool not found: install Debian's prometheus-alertmanager"
    result = subprocess.run([tool, "check-config", str(ALERTMANAGER_CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for severity in ("critical", "warning"):
        routed = subprocess.run(
            [tool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
             "alertname=LowSuccessRate", f"severity={severity}"],
            capture_output=True, text=True, timeout=60,
        )
        assert routed.stdout.strip() == f"stgym-{severity}", routed.stdout + routed.stderr
    routed = subprocess.run(
        [tool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
         "alertname=Watchdog", "severity=none"], capture_output=True, text=True, timeout=60)
    assert routed.stdout.strip() == "stgym-watchdog", routed.stdout + routed.stderr
