"""compose/bare/hosts.py without namespaces: the host list and the Prometheus file_sd targets
generated from it (the several-machines recipe; tests/ops/test_multihost.py runs it for real)."""
import json
import sys
from pathlib import Path

import pytest

from stgym import settings as settings_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "compose" / "bare"))
import hosts  # noqa: E402


def test_targets_per_job_labelled_by_host(tmp_path):
    (tmp_path / "hosts.txt").write_text(
        "# name addr role workers\nsvc 10.0.0.1 services\nt1 10.0.0.11 trainer 3  # three\n"
        "s1 10.0.0.21 stream\n")
    s = settings_module.Settings(run_dir=str(tmp_path / "run"), trainer_metrics_port=9000)
    paths = hosts.write_targets(hosts.read_hosts(tmp_path / "hosts.txt"), s)
    by_job = {p.stem: json.loads(p.read_text()) for p in paths}
    assert by_job["trainers"] == [{"targets": ["10.0.0.11:9000", "10.0.0.11:9001", "10.0.0.11:9002"],
                                   "labels": {"host": "t1"}}]
    assert by_job["stream-processors"] == [{"targets": [f"10.0.0.21:{s.stream_web_port}"],
                                            "labels": {"host": "s1"}}]
    assert {p.parent for p in paths} == {tmp_path / "run" / "targets"}


def test_a_bad_line_is_named(tmp_path):
    (tmp_path / "hosts.txt").write_text("svc 10.0.0.1 services\nt1 10.0.0.11 trainr\n")
    with pytest.raises(ValueError, match=r"hosts.txt:2: expected 'name address"):
        hosts.read_hosts(tmp_path / "hosts.txt")
