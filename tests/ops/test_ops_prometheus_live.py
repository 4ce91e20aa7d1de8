"""The real Prometheus of the service stack runs the committed configuration: every rule
group loaded and evaluated without errors, and the inputs of the infrastructure alerts
(Kafka TCP probe, PostgreSQL exporter, node filesystems) are scraped and healthy."""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
import yaml

from streams import workload

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "compose" / "prometheus"
pytestmark = pytest.mark.services


def api(prometheus_url: str, path: str, **params) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    code, body = workload.http_get(f"{prometheus_url}/api/v1/{path}{query}", timeout=10)
    assert code == 200, body
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]


def test_committed_rules_are_loaded_and_evaluate_cleanly(prometheus_url):
    expected = {
        rule.get("alert") or rule.get("record")
        for name in ("recording_rules.yml", "alert_rules.yml")
        for group in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["groups"]
        for rule in group["rules"]
    }

    def evaluated():
        rules = [r for g in api(prometheus_url, "rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001") for r in rules) else None

    rules = workload.wait_until(evaluated, 60, 1.0, what="every rule evaluated once")
    assert {r["name"] for r in rules} == expected
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_infrastructure_alert_inputs_are_scraped_and_healthy(prometheus_url):
    def value(query: str) -> list[float]:
        return [float(s["value"][1]) for s in api(prometheus_url, "query", query=query)["result"]]

    workload.wait_until(lambda: value('probe_success{job="kafka"}') == [1.0], 60, 1.0,
                       what="Kafka TCP probe succeeding")
    workload.wait_until(lambda: value('pg_up{job="postgres"}') == [1.0], 60, 1.0,
                       what="PostgreSQL exporter reporting pg_up 1")
    used = workload.wait_until(lambda: value("instance_mountpoint:node_filesystem_used:ratio"), 60, 1.0,
                              what="node filesystem usage recorded")
    assert all(0.0 <= ratio <= 1.0 for ratio in used)
    firing = {a["labels"]["alertname"] for a in api(prometheus_url, "alerts")["alerts"]
              if a["state"] == "firing"}
    assert not firing & {"KafkaDown", "DatabaseDown"}
