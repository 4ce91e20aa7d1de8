"""The write error rate's exact binomial bounds (stgym.kpi.clopper_pearson) against SciPy's
independent `binomtest(...).proportion_ci(method="exact")`, in the KPI rows and the gauges."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scipy.stats import binomtest

from stgym import kpi
from streams.metrics import KpiCollector


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 5), (5, 5), (1, 1000),
                                 (500, 2000), (7, 10**6), (999_999, 10**6)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lower, upper = kpi.clopper_pearson(k, n)
    assert lower == pytest.approx(ci.low, rel=1e-9, abs=1e-15)
    assert upper == pytest.approx(ci.high, rel=1e-9, abs=1e-15)


def test_clopper_pearson_edges():
    assert kpi.clopper_pearson(0, 0) is None
    assert kpi.clopper_pearson(0, 20)[0] == 0.0 and kpi.clopper_pearson(20, 20)[1] == 1.0
    # no failure in n: the upper end is 1 - 0.025^(1/n) (the rule of three's exact form)
    assert kpi.clopper_pearson(0, 300)[1] == pytest.approx(1 - 0.025 ** (1 / 300), rel=1e-12)
    with pytest.raises(ValueError, match="k=6, n=5"):
        kpi.clopper_pearson(6, 5)


def test_summarize_carries_the_write_error_rate_and_its_bounds():
    row = kpi.summarize({"episodes_total": 2000, "successes": 1500})
    assert row["write_errors"] == 500 and row["write_error_rate"] == 0.25
    assert (row["write_error_rate_lower95"], row["write_error_rate_upper95"]) == kpi.clopper_pearson(500, 2000)
    empty = kpi.summarize({"episodes_total": 0, "successes": 0})
    assert empty["write_error_rate"] is None and empty["write_error_rate_upper95"] is None


class _Snapshot:
    def metric_snapshot(self, max_age_s):
        row = {c: 0 for c in ("energy_success_sum", "switch_time_sum", "switch_time_count",
                              "sim_steps", "wall_time_s", "reward_sum")}
        return {"kpis": [{"key": ("exp-7", "stt-pma", "cem"), **row, "episodes_total": 5,
                          "successes": 2, "objective": None, "learning_rate": None,
                          "model_accuracy": None, "validation_objective": None}],
                "histograms": {}, "experiments": {}}


def test_gauges_export_the_bounds():
    registry = CollectorRegistry()
    registry.register(KpiCollector(_Snapshot()))
    text = generate_latest(registry).decode()
    labels = 'algorithm="cem",device_type="stt-pma",experiment="exp-7"'
    lower, upper = kpi.clopper_pearson(3, 5)
    assert f"write_error_rate{{{labels}}} 0.6" in text
    assert f"write_error_rate_lower_bound{{{labels}}} {lower!r}" in text
    assert f"write_error_rate_upper_bound{{{labels}}} {upper!r}" in text
