"""`stgym demo`, `stgym kpi`, `stgym db` and `stgym stream` argument handling, through the CLI."""
import json
import subprocess
import sys

import pytest

from sinks.base import migrations
from stgym.cli import main


def run_cli(*argv, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "stgym.cli", *argv], capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_demo_then_kpi_agree(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    code, out, err = run_cli("demo", "--episodes", "120", "--db", db, "--json")
    assert code == 0, err
    demo = json.loads(out)
    assert sum(r["episodes_total"] for r in demo["kpis"]) == 120
    assert {r["device_type"] for r in demo["kpis"]} == {"stt-pma", "sot-pma"}
    code, out, err = run_cli("kpi", "--db", db, "--experiment", demo["experiment"], "--json")
    assert code == 0, err
    rows = json.loads(out)
    for row in rows:
        for key in ("episodes_total", "successes", "success_rate", "energy_per_switch_j_mean",
                    "switching_time_s_p50", "switching_time_s_p95", "switching_time_s_p99",
                    "sim_steps_per_s"):
            assert key in row
    assert [r["episodes_total"] for r in rows] == [r["episodes_total"] for r in demo["kpis"]]
    code, out, err = run_cli("kpi", "--db", db, "--window", "1m", "--since", "1h")
    assert code == 0 and demo["experiment"] in out and "success" in out
    code, out, err = run_cli("db", "status", "--db", db)
    assert code == 0 and "001_initial: applied" in out


def test_db_migrate_is_idempotent(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    assert main(["db", "migrate", "--db", db]) == 0
    assert main(["db", "migrate", "--db", db]) == 0
    assert f"schema at version {migrations()[-1].version}" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["kpi", "--db", "mysql://x/y"], "unsupported database URL"),
    (["stream", "--bus", "memory", "--db", "sqlite://"], "needs a Kafka bus"),
])
def test_user_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["kpi", "--since", "soon"], ["kpi", "--window", "0m"],
                                  ["demo", "--episodes", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
