"""producers.parallel_ceiling: the plain-processes reference of `stgym bench ray` (a tiny
workload: the structure of its result, no timing asserts)."""
import pytest

from producers import parallel_ceiling


def test_measure_times_one_and_two_processes():
    result = parallel_ceiling.measure(generations=2, episodes=8, pairs=2)
    assert (result["generations"], result["episodes"], len(result["pairs"])) == (2, 8, 2)
    for row in result["pairs"]:
        assert row["one_process_s"] > 0 and row["two_processes_s"] > 0
        assert row["ratio"] == row["one_process_s"] / row["two_processes_s"]
        assert len(row["children"]) == 2
        assert all(child["wall_s"] > 0 and child["cpu_s"] > 0 for child in row["children"])
    ratios = sorted(row["ratio"] for row in result["pairs"])
    assert result["ratio_min"] == ratios[0] and result["ratio_max"] == ratios[-1]
    assert ratios[0] <= result["ratio_median"] <= ratios[-1]
    assert len(result["load_1min"]) == 2


def test_a_child_that_fails_is_an_error_naming_it(monkeypatch):
    monkeypatch.setattr(parallel_ceiling, "MODULE", "producers.no_such_module")
    with pytest.raises(RuntimeError, match="plain-processes child exited.*no_such_module"):
        parallel_ceiling.measure(generations=1, episodes=2, pairs=1)
