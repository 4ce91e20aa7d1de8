"""`stgym demo`: the whole pipeline in one process, no services needed.

trainer (producers.runner) -> memory bus -> the stream aggregation (streams.pipeline, the same
code the Faust workers run) -> SQLite in the user's data directory + a local /metrics -> the
KPI table; the live dashboard and KPI API of `stgym serve` run alongside (URL printed).
"""
from __future__ import annotations

import json
import logging
import secrets
import time

from stgym import kpi
from stgym import settings as settings_module

log = logging.getLogger("stgym.demo")

DEMO_RUNS = (("SpinTorque-v1", "cem"), ("SpinTorqueSOT-v1", "cem"))


def run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from producers.runner import train
    from producers.train_config import TrainConfig
    from sinks.factory import open_sink
    from sinks.postgres import redact
    from stgym.bus import open_bus
    from stgym import httpserver
    from streams.kpitable import print_kpi_table
    from streams.metrics import KpiCollector, ProcessMetrics
    from streams.api import KpiApi, open_reader
    from streams.pipeline import EmbeddedPipeline, Processor

    settings = settings_module.load()
    url = args.db or settings.sqlite_url
    token = secrets.token_hex(3)
    experiment = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{token}"
    console = Console(stderr=True)

    sink = open_sink(url)
    sink.setup()
    metrics = ProcessMetrics("stgym-demo")
    metrics.registry.register(KpiCollector(sink))
    server = httpserver.serve(args.web_port, metrics.registry,
                              lambda: (sink.ping(), {"database": sink.ping()}), service="stgym-demo")
    port = server.server_address[1]
    bus = open_bus(f"memory://demo-{token}")
    pipeline = EmbeddedPipeline(bus, Processor(sink, metrics), group=f"demo-{token}").start()
    log.info("KPI store %s; live metrics on http://127.0.0.1:%d/metrics", redact(url), port)
    reader = sink if url in ("sqlite://", "sqlite:///:memory:") else open_reader(url)
    dashboard = KpiApi(reader, service="stgym-demo", refresh_s=1.0).start(args.api_port)
    dashboard_url = f"http://127.0.0.1:{dashboard.server_address[1]}"
    console.print(f"Live dashboard: [bold]{dashboard_url}/?experiment={experiment}&window=5s&since=1h"
                  "[/bold]", soft_wrap=True)

    per_run = max(1, args.episodes // len(DEMO_RUNS))
    started = time.perf_counter()
    summaries = []
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("success {task.fields[rate]}"), TimeElapsedColumn(),
                      console=console, transient=False, disable=args.json) as bar:
            for env_id, algorithm in DEMO_RUNS:
                task = bar.add_task(f"{algorithm} on {env_id}", total=per_run, rate="—")

                def progress(p, task=task):
                    bar.update(task, completed=p.episodes, rate=f"{p.success_rate:.0%}")

                summary = train(
                    TrainConfig(algorithm=algorithm, env_id=env_id, episodes=per_run, workers=2,
                                experiment=experiment, seed=7, bus_url="memory"),
                    bus=bus, progress=progress,
                )
                summaries.append(summary)
                if not summary.ok:
                    log.error("training workers failed: %s", ", ".join(summary.failed_workers))
                    return 1
        pipeline.drain()
    finally:
        pipeline.stop()
    rows = sink.query_kpis(experiment=experiment)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({"experiment": experiment, "db": redact(url), "wall_time_s": elapsed,
                          "kpis": rows}, indent=2))
    else:
        print_kpi_table(rows, title=f"KPIs of {experiment}")
        stored = sum(r["episodes_total"] for r in rows)
        log.info("%d episodes trained, aggregated and stored in %.1f s (%d events rejected)",
                 stored, elapsed, int(sum(metrics.rejected.labels(reason=r)._value.get()
                                          for r in kpi.REJECT_REASONS)))
        console.print(f"Query again: [bold]stgym kpi --db {redact(url)} --experiment {experiment}[/bold]"
                      f"  (add --window 1m for per-minute rows, --json for machines)", soft_wrap=True)
    if args.keep_serving:
        console.print(f"Serving the dashboard at {dashboard_url}/ until Ctrl-C", soft_wrap=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    dashboard.shutdown()
    if reader is not sink:
        reader.close()
    server.shutdown()
    sink.close()
    return 0
