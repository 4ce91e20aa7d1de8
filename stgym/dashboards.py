"""Grafana dashboards as code (grafana-foundation-sdk): Overview and Training performance.

``python -m stgym.dashboards`` writes the generated JSON to ``compose/grafana/dashboards/``
(committed; Grafana loads it through ``compose/grafana/provisioning/``).
``python -m stgym.dashboards --check`` fails when the committed JSON differs from the code.

Every panel reads Prometheus (datasource variable ``$datasource``) through the template
variables ``$experiment``, ``$device_type`` and ``$algorithm`` (multi-value, "All" = ``.*``);
rates use the recording rules of ``compose/prometheus/recording_rules.yml``.
`panel_queries` lists every panel's PromQL so tests can run it against a live Prometheus.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stgym.settings import REPO_ROOT

OUTPUT_DIR = REPO_ROOT / "compose" / "grafana" / "dashboards"
DATASOURCE = "${datasource}"
KPI = 'experiment=~"$experiment",device_type=~"$device_type",algorithm=~"$algorithm"'
VARIABLES = ("experiment", "device_type", "algorithm")
# Panels whose metric exists only on some machines (a GPU with NVML): no data is correct there.
HARDWARE_DEPENDENT = {"GPU utilisation"}


def _sdk():
    try:
        from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
        from grafana_foundation_sdk.builders import bargauge
        from grafana_foundation_sdk.models import dashboard as models
    except ImportError as error:  # optional extra
        raise SystemExit("grafana-foundation-sdk is missing: pip install -e '.[dashboards]'") from error
    return dashboard, prometheus, stat, timeseries, bargauge, models


def _target(prometheus, expr: str, legend: str, ref: str):
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _panel(kind, title: str, unit: str, queries: list[tuple[str, str]], width: int = 12,
           height: int = 8, description: str = ""):
    _, prometheus, _, _, _, models = _sdk()
    panel = (kind.Panel().title(title).unit(unit).span(width).height(height)
             .datasource(models.DataSourceRef(type_val="prometheus", uid=DATASOURCE)))
    if description:
        panel = panel.description(description)
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_target(prometheus, expr, legend, chr(ord("A") + index)))
    return panel


def _variables(dashboard, models) -> list:
    datasource = (dashboard.DatasourceVariable("datasource").label("Data source")
                  .type("prometheus"))
    out = [datasource]
    scope = ""
    for name, label in zip(VARIABLES, ("Experiment", "Device", "Algorithm")):
        selector = f"training_episodes_total{{{scope}}}" if scope else "training_episodes_total"
        query = f"label_values({selector}, {name})"
        out.append(
            dashboard.QueryVariable(name).label(label)
            .datasource(models.DataSourceRef(type_val="prometheus", uid=DATASOURCE))
            .query({"query": query, "refId": f"{name}-values"})
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
        )
        scope = ",".join(filter(None, [scope, f'{name}=~"${name}"']))
    return out


def _dashboard(title: str, uid: str, panels: list) -> dict[str, Any]:
    """A dashboard with our time settings, template variables and panels, as JSON."""
    dashboard, _, _, _, _, models = _sdk()
    builder = (
        dashboard.Dashboard(title).uid(uid)
        .tags(["stgym"]).refresh("10s").time("now-1h", "now").timezone("utc")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables(dashboard, models):
        builder = builder.with_variable(variable)
    for panel in panels:
        builder = builder.with_panel(panel)
    return json.loads(json.dumps(builder.build(), cls=_encoder()))


KEY_LEGEND = "{{experiment}} {{device_type}} {{algorithm}}"


def overview() -> dict[str, Any]:
    _, _, stat, timeseries, _, _ = _sdk()
    key = KEY_LEGEND
    panels = [
        _panel(timeseries, "Episode rate", "ops",
               [(f"stgym:training_episodes:rate1m{{{KPI}}}", key)],
               description="Episodes per second (recording rule over 1 m)."),
        _panel(timeseries, "Success rate", "percentunit",
               [(f"success_rate{{{KPI}}}", key)],
               description="Successful switches / episodes; LowSuccessRate fires below 0.8 for 10 m."),
        _panel(timeseries, "Energy per switch", "joule",
               [(f"stgym:energy_per_switch_joules:mean_rate5m{{{KPI}}}", key)],
               description="Mean energy of the successful switches of the last 5 m."),
        _panel(timeseries, "Switching time p50 / p95 / p99", "s",
               [(f"stgym:switching_time_seconds:p50_rate5m{{{KPI}}}", f"p50 {key}"),
                (f"stgym:switching_time_seconds:p95_rate5m{{{KPI}}}", f"p95 {key}"),
                (f"stgym:switching_time_seconds:p99_rate5m{{{KPI}}}", f"p99 {key}")]),
        _panel(timeseries, "Simulation steps/s", "ops",
               [(f"simulation_steps_per_second{{{KPI}}}", key)],
               description="LLG integrator steps per wall-clock second; SlowSimulation below 100."),
        _panel(timeseries, "Memory", "bytes",
               [("memory_usage_bytes", "{{service}} {{instance}}")],
               description="Resident memory per process; HighMemoryUsage above 6 GiB."),
        _panel(timeseries, "GPU utilisation", "percent",
               [("gpu_utilization_percent", "{{instance}}")],
               description="Only where NVML and a GPU exist; empty otherwise (never a fake 0)."),
        _panel(timeseries, "Write error rate (exact 95 % interval)", "percentunit",
               [(f"write_error_rate{{{KPI}}}", key),
                (f"write_error_rate_lower_bound{{{KPI}}}", f"lower {key}"),
                (f"write_error_rate_upper_bound{{{KPI}}}", f"upper {key}")],
               description="Failed writes / episodes with its Clopper-Pearson interval; "
                           "LowSuccessRateConfident fires when the lower end is above 20 %."),
        _panel(timeseries, "CPU per process", "short",
               [("sum by (service, instance) (rate(stgym_process_cpu_seconds_total[1m]))",
                 "{{service}} {{instance}}")],
               description="Cores busy (1 = one core all the time), user + system."),
        _panel(timeseries, "Disk I/O per process", "Bps",
               [("rate(stgym_process_disk_read_bytes_total[1m])", "read {{service}} {{instance}}"),
                ("rate(stgym_process_disk_written_bytes_total[1m])",
                 "written {{service}} {{instance}}")],
               description="Bytes the process made the storage layer read / write."),
        _panel(stat, "Firing alerts", "none",
               [('count(ALERTS{alertstate="firing"}) or vector(0)', "firing")], width=6,
               description="Alerts firing now (see Alertmanager on :9095 and `stgym logs search "
                           "--service stgym-alerts`)."),
        _panel(stat, "Experiments", "none",
               [("sum by (status) (experiments_total)", "{{status}}")], width=6),
        _panel(timeseries, "Events processed / rejected", "ops",
               [("stgym:events_processed:rate1m", "processed {{topic}}"),
                ("stgym:events_rejected:rate1m", "rejected {{reason}}")]),
        _panel(timeseries, "Rejected share", "percentunit",
               [("stgym:events_rejected:ratio_rate5m", "rejected / consumed")],
               description="HighErrorRate fires above 5 % for 5 m."),
        _panel(timeseries, "Consumer lag and last event age", "short",
               [("sum by (topic) (stgym_consumer_lag_records)", "lag {{topic}}"),
                ("max(stgym_last_event_age_seconds)", "last event age [s]")]),
    ]
    return _dashboard("spin-torque-gym — Overview", "stgym-overview", panels)


def training_performance() -> dict[str, Any]:
    _, _, _, timeseries, bargauge, _ = _sdk()
    key = KEY_LEGEND
    panels = [
        _panel(timeseries, "Training vs validation objective", "short",
               [(f"training_objective{{{KPI}}}", f"training {key}"),
                (f"training_validation_objective{{{KPI}}}", f"validation {key}")],
               description="Latest objective reported by each trainer (the mean episode score it "
                           "maximises: CEM elite mean, REINFORCE batch mean; its loss is minus "
                           "it) and the same score of the current policy on held-out episodes "
                           "(fixed seeds, never trained on): a widening gap is over-fitting."),
        _panel(timeseries, "Learning rate", "short",
               [(f"training_learning_rate{{{KPI}}}", key)]),
        _panel(timeseries, "Model accuracy", "percentunit",
               [(f"model_accuracy{{{KPI}}}", key)],
               description="Evaluation success rate of the current policy."),
        _panel(timeseries, "Episodes to convergence", "short",
               [(f"training_episodes_to_convergence{{{KPI}}}", key)],
               description="Mean episodes a converged run trained until the first of 3 "
                           "consecutive iterations with model accuracy >= 95 % (stgym.kpi)."),
        _panel(bargauge, "Runs converged", "none",
               [(f"training_runs_converged{{{KPI}}}", f"converged {key}"),
                (f"training_runs{{{KPI}}}", f"runs {key}")]),
        _panel(bargauge, "Success rate by algorithm", "percentunit",
               [(f"avg by (algorithm) (success_rate{{{KPI}}})", "{{algorithm}}")]),
        _panel(bargauge, "Energy per switch by algorithm", "joule",
               [(f"avg by (algorithm) (stgym:energy_per_switch_joules:mean_rate5m{{{KPI}}})",
                 "{{algorithm}}")]),
        _panel(timeseries, "Episode rate by algorithm", "ops",
               [(f"sum by (algorithm) (stgym:training_episodes:rate1m{{{KPI}}})", "{{algorithm}}")]),
        _panel(timeseries, "Switching time p95 by algorithm", "s",
               [(f"max by (algorithm) (stgym:switching_time_seconds:p95_rate5m{{{KPI}}})",
                 "{{algorithm}}")]),
        _panel(timeseries, "Simulation steps/s by algorithm", "ops",
               [(f"avg by (algorithm) (simulation_steps_per_second{{{KPI}}})", "{{algorithm}}")]),
    ]
    return _dashboard("spin-torque-gym — Training performance", "stgym-training", panels)


def _encoder():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return JSONEncoder


DASHBOARDS = {"overview.json": overview, "training-performance.json": training_performance}


def panel_queries(dashboard_json: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of a dashboard JSON."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_json.get("panels", [])
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the variables our dashboards use."""
    for name, value in sorted(values.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return expr


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUTPUT_DIR / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    if stale:
        print(f"stale dashboards (run python -m stgym.dashboards): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
