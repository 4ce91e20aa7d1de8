"""`stgym simulate` and `stgym bench physics`: flags, JSON fields, one-line errors with exit code 2."""
import csv
import json
import math
import subprocess
import sys

import pytest

from stgym import cli

JSON_FIELDS = {
    "switched", "switching_time_s", "final_m", "energy_j", "steps", "wall_time_s", "hk_eff_a_per_m",
    "jc0_a_per_m2", "demag_factors", "thermal_stability", "parameters",
}


def run_cli(capsys, *argv):
    code = cli.main(["simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_of_the_reference_case(capsys):
    code, out, err = run_cli(capsys, "--device", "stt-pma", "--current-density", "2.8359659e10", "--duration", "20e-9",
                             "--dt", "1e-13", "--method", "rk4", "--theta0", "0.05", "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert JSON_FIELDS <= set(report)
    assert report["switched"] is True
    assert report["switching_time_s"] == pytest.approx(9.1646e-9, rel=1e-4)
    assert report["steps"] == 200_000 and report["wall_time_s"] > 0
    assert math.isclose(sum(x * x for x in report["final_m"]), 1.0, rel_tol=1e-12)
    assert report["demag_factors"][2] == pytest.approx(0.9055, abs=5e-5)
    assert report["hk_eff_a_per_m"] == pytest.approx(0.2 / 1.25663706212e-6, rel=1e-12)
    assert report["jc0_a_per_m2"] == pytest.approx(1.41798e10, rel=1e-5)
    assert report["thermal_stability"] == pytest.approx(42.475, rel=1e-4)
    assert report["parameters"]["ms"] == 1e6 and report["parameters"]["eta"] == 0.6


def test_flags_reach_the_simulation(capsys, tmp_path):
    trace = tmp_path / "trace.csv"
    plot = tmp_path / "m.png"
    argv = [
        "--device", "sot-pma", "--current-density", "1e11", "--duration", "1e-10", "--dt", "1e-13",
        "--method", "heun", "--theta0", "0.1", "--phi0", "1.0", "--temperature", "300", "--field", "2e4,0,0",
        "--param", "alpha=0.02", "--param", "spin_hall_angle=0.2", "--param", "hm_thickness=5e-9", "--seed", "7",
        "--json",
    ]
    code, out, _ = run_cli(capsys, *argv, "--trace", str(trace), "--plot", str(plot))
    assert code == 0
    report = json.loads(out)
    assert report["parameters"]["alpha"] == 0.02 and report["parameters"]["spin_hall_angle"] == 0.2
    assert report["parameters"]["hm_thickness"] == 5e-9 and report["parameters"]["field"] == [2e4, 0.0, 0.0]
    assert report["device"] == "sot-pma" and report["method"] == "heun" and report["seed"] == 7
    assert report["steps"] == 1000 and report["temperature_k"] == 300.0
    rows = list(csv.reader(trace.open()))
    assert rows[0] == ["t_s", "mx", "my", "mz"] and len(rows) == 1002
    first = [float(x) for x in rows[1]]
    assert first[1:] == pytest.approx([math.sin(0.1) * math.cos(1.0), math.sin(0.1) * math.sin(1.0), math.cos(0.1)])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, again, _ = run_cli(capsys, *argv)
    assert json.loads(again)["final_m"] == report["final_m"]  # seeded


def test_readable_summary(capsys):
    code, out, _ = run_cli(capsys, "--duration", "12e-9", "--method", "dp45")
    assert code == 0
    assert "switched          yes" in out and "Jc0" in out and "thermal stability" in out


@pytest.mark.parametrize(
    "argv,name",
    [
        (["--param", "ms=-1e6"], "ms"),
        (["--dt", "0"], "dt"),
        (["--dt", "-1e-13"], "dt"),
        (["--current-density", "nan"], "current_density"),
        (["--duration", "abc"], "duration"),
        (["--param", "alpah=0.1"], "alpah"),
        (["--param", "alpha"], "param"),
        (["--device", "stt-imc"], "device"),
        (["--method", "euler"], "method"),
        (["--field", "1,2"], "field"),
        (["--theta0", "inf"], "theta0"),
        (["--temperature", "-5"], "temperature"),
        (["--method", "rk4", "--temperature", "300"], "temperature"),
        (["--seed", "-3"], "seed"),
    ],
)
def test_impossible_parameters_exit_2_with_one_line_naming_them(capsys, argv, name):
    code, out, err = run_cli(capsys, "--duration", "1e-12", *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in err


def test_console_script_error_is_one_line_without_traceback():
    done = subprocess.run([sys.executable, "-m", "stgym.cli", "simulate", "--param", "ms=-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "stgym simulate: error: ms: expected saturation magnetization in A/m, > 0, got -1.0"
    ]


def test_bench_physics_quick_json_smoke():
    done = subprocess.run([sys.executable, "-m", "stgym.cli", "bench", "physics", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for field in ("ratio_vs_c", "ratio_vs_numpy", "ratio_vs_cmtj", "batched_device_steps_per_s", "heun_vs_rk4",
                  "single_steps_per_s", "c_reference_steps_per_s", "meets_targets",
                  "batched_heun_device_steps_per_cpu_s", "batched_heun_ns_per_device_step", "batched_heun_vs_rk4"):
        assert field in report
    assert report["ratio_vs_c"] > 0 and report["ratio_vs_numpy"] > 0 and report["heun_vs_rk4"] > 0
    assert report["c_reference_switching_time_s"] == pytest.approx(report["switching_time_s"], rel=1e-9)
