"""CLI commands of the observability side: logs search/setup, alerts serve, plot kpi."""
from __future__ import annotations

import sys

from stgym.durations import duration_arg


def register(subparsers) -> None:
    logs = subparsers.add_parser("logs", help="search structured logs (OpenSearch or local file)")
    logs_commands = logs.add_subparsers(dest="logs_command", metavar="ACTION", required=True)
    search = logs_commands.add_parser(
        "search", help="print log records matching QUERY and filters",
        description="Every word of QUERY must occur in the message, logger, exception or alert "
                    "name. Searches OpenSearch; in embedded mode (or --store local) the local "
                    "JSON log file with the same filters.",
    )
    search.add_argument("query", nargs="?", default="", help="words to find ('' or * = all)")
    search.add_argument("--level", help="minimum level: DEBUG, INFO, WARNING, ERROR, CRITICAL")
    search.add_argument("--service", help="exact service name, e.g. stgym-streams")
    search.add_argument("--experiment", help="exact experiment id")
    search.add_argument("--since", type=duration_arg,
                        help="only records newer than this duration (30s, 15m, 1h, 2d, 1w)")
    search.add_argument("--limit", type=int, default=50, help="newest N records (default 50)")
    search.add_argument("--json", action="store_true", help="print a JSON list of records")
    search.add_argument(
        "--store", choices=("auto", "opensearch", "local"), default="auto",
        help="auto: OpenSearch if it answers, else the local log file (default)",
    )
    search.add_argument("--log-file", help="local JSON log file (default <data_dir>/logs/stgym.jsonl)")
    search.set_defaults(handler=run_logs_search)
    setup = logs_commands.add_parser(
        "setup", help="install the OpenSearch index templates and daily-index pipeline"
    )
    setup.set_defaults(handler=run_logs_setup)

    alerts = subparsers.add_parser("alerts", help="Alertmanager webhook receiver")
    alerts_commands = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    serve = alerts_commands.add_parser(
        "serve", help="receive Alertmanager webhooks and log each alert as a structured record"
    )
    serve.add_argument("--port", type=int, help="listen port (default settings.alert_webhook_port)")
    serve.set_defaults(handler=run_alerts_serve)

    traces = subparsers.add_parser(
        "traces", help="an experiment's traces from Jaeger, with span durations",
        description="The trainer traces tagged with the experiment (train_model > iteration > "
                    "physics_simulation / publish / reward_calculation) and the stream batches "
                    "linked to them (process_batch > validate / dlq_publish / db_commit).",
    )
    traces.add_argument("--experiment", required=True, help="experiment id")
    traces.add_argument("--since", type=duration_arg, default=3600,
                        help="look this far back (90s, 15m, 2h, 1d; default 1h)")
    traces.add_argument("--limit", type=int, default=20, help="newest N trainer traces (default 20)")
    traces.add_argument("--json", action="store_true", help="print a JSON list of traces")
    traces.set_defaults(handler=run_traces)

    retention = subparsers.add_parser(
        "retention", help="delete data past its retention period (settings; docs/operations.md)")
    retention_commands = retention.add_subparsers(dest="retention_command", metavar="ACTION",
                                                  required=True)
    apply = retention_commands.add_parser(
        "apply", help="delete episode rows older than episodes_retention_months (KPI aggregates "
                      "stay) and log indices older than log_retention_days")
    apply.add_argument("--db", help="database URL (default settings.postgres_url)")
    apply.add_argument("--skip-logs", action="store_true", help="leave the log indices alone")
    apply.set_defaults(handler=run_retention_apply)

    backup = subparsers.add_parser(
        "backup", help="back up and restore the stack (KPI and MLflow databases, Prometheus TSDB, "
                       "log indices, MLflow artifacts, dashboards)")
    backup_commands = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    create = backup_commands.add_parser("create", help="write a new backup with a sha256 manifest")
    create.add_argument("--to", help="backup directory (default settings.backup_dir/stgym-<time>)")
    create.set_defaults(handler=run_backup)
    backup_commands.add_parser("list", help="backups under settings.backup_dir").set_defaults(
        handler=run_backup)
    prune = backup_commands.add_parser("prune", help="delete all but the newest N backups")
    prune.add_argument("--keep", type=int, required=True, help="complete backups to keep")
    prune.set_defaults(handler=run_backup)
    restore = backup_commands.add_parser(
        "restore", help="verify a backup, then restore it into a fresh stack (overwrites nothing)")
    restore.add_argument("dir", help="backup directory")
    restore.set_defaults(handler=run_backup)

    plot = subparsers.add_parser("plot", help="draw charts without Grafana")
    plot_commands = plot.add_subparsers(dest="plot_command", metavar="WHAT", required=True)
    kpi = plot_commands.add_parser("kpi", help="KPI history from the database to a PNG")
    kpi.add_argument("--db", help="database URL (default: the SQLite file of the embedded mode)")
    kpi.add_argument("--experiment", help="only this experiment")
    kpi.add_argument("--since", type=duration_arg,
                     help="only windows newer than this duration (1h, 2d, 1w)")
    kpi.add_argument("--output", "-o", default="kpi.png", help="PNG path (default kpi.png)")
    kpi.set_defaults(handler=run_plot_kpi)


def run_logs_search(args) -> int:
    import datetime as dt
    from pathlib import Path

    from stgym import logsearch, logsetup
    from stgym.errors import ServiceUnavailable, UserError

    if args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    query = logsearch.LogQuery(
        text=args.query, level=logsearch.parse_level(args.level), service=args.service,
        experiment=args.experiment,
        since=dt.timedelta(seconds=args.since) if args.since else None, limit=args.limit,
    )
    log_file = Path(args.log_file) if args.log_file else logsetup.log_file_path()
    if args.store == "local":
        records = logsearch.search_file(log_file, query)
    else:
        try:
            records = logsearch.search_opensearch(query)
        except ServiceUnavailable as error:
            if args.store == "opensearch":
                raise
            print(f"stgym logs search: {error}; searching {log_file}", file=sys.stderr)
            records = logsearch.search_file(log_file, query)
    logsearch.print_records(records, args.json)
    return 0


def run_logs_setup(args) -> int:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    from stgym import logsearch, settings
    from stgym.errors import ServiceUnavailable

    url = settings.load().opensearch_url
    try:
        names = logsearch.install_templates(url)
    except OSConnectionError as error:
        raise ServiceUnavailable(f"OpenSearch at {url} does not answer") from error
    print(f"installed {', '.join(names)} on {url}")
    return 0


def run_alerts_serve(args) -> int:
    from stgym import alerts, settings

    config = settings.load()
    token = config.alert_webhook_token or None
    token_file = config.secret_path(settings.ALERT_WEBHOOK_TOKEN)
    if token is None and token_file.exists():  # generated by compose/bare (services.sh up)
        token = token_file.read_text().strip() or None
    return alerts.serve(config.host, args.port if args.port is not None else config.alert_webhook_port,
                        config.watchdog_timeout_s, token)


def run_retention_apply(args) -> int:
    import datetime as dt

    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    from sinks import retention
    from sinks.factory import open_sink
    from sinks.postgres import redact
    from stgym import logretention, settings
    from stgym.errors import ServiceUnavailable

    config = settings.load()
    url = args.db or config.postgres_url
    cutoff = retention.months_before(dt.datetime.now(dt.timezone.utc), config.episodes_retention_months)
    sink = open_sink(url)
    sink.setup()
    try:
        deleted = retention.purge_events(sink, cutoff.timestamp())
    finally:
        sink.close()
    print(f"{redact(url)}: deleted rows older than {cutoff:%Y-%m-%d %H:%M} UTC "
          f"({config.episodes_retention_months} months): "
          + ", ".join(f"{table} {count}" for table, count in deleted.items()))
    if not args.skip_logs:
        try:
            indices = logretention.delete_expired(config.opensearch_url, config.logs_index,
                                                  config.log_retention_days)
        except OSConnectionError as error:
            raise ServiceUnavailable(f"OpenSearch at {config.opensearch_url} does not answer") from error
        print(f"{config.opensearch_url}: deleted {len(indices)} log indices older than "
              f"{config.log_retention_days} days{': ' + ', '.join(indices) if indices else ''}")
    return 0


def run_backup(args) -> int:
    from pathlib import Path

    from stgym import backup

    if args.backup_command == "create":
        path = backup.create(Path(args.to) if args.to else None)
        manifest = backup.read_manifest(path)
        print(f"{path}: {len(manifest['files'])} files, {manifest['size_bytes']:,} bytes in "
              f"{manifest['seconds']['total']} s ({manifest['seconds']})")
    elif args.backup_command == "list":
        for info in backup.list_backups():
            if info.manifest:
                print(f"{info.path}  {info.created_at}  {info.manifest['size_bytes']:>14,} bytes  "
                      f"{', '.join(info.manifest['components'])}")
            else:
                print(f"{info.path}  incomplete")
    elif args.backup_command == "prune":
        for path in backup.prune(args.keep):
            print(f"deleted {path}")
    else:
        done = backup.restore(Path(args.dir))
        print(f"restored {args.dir}: databases {', '.join(done['databases'])}; "
              f"{len(done['blocks'])} Prometheus blocks (loaded within a minute); log indices "
              f"{', '.join(done['indices']) or 'none'}; {done['seconds']}")
    return 0


def run_traces(args) -> int:
    from stgym import settings, tracequery
    from stgym.errors import UserError

    if args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    found = tracequery.experiment_traces(settings.load().jaeger_url, args.experiment,
                                         args.since, args.limit)
    tracequery.print_traces(found, args.json)
    return 0


def run_plot_kpi(args) -> int:
    from pathlib import Path

    from sinks.factory import open_sink
    from sinks.postgres import redact
    from stgym import kpiplot
    from stgym import settings as settings_module
    from stgym.errors import UserError

    url = args.db or settings_module.load().sqlite_url
    sink = open_sink(url)
    sink.setup()
    try:
        rows = sink.query_kpis(args.experiment, since_s=args.since, window_s=kpiplot.WINDOW_S)
    finally:
        sink.close()
    if not rows:
        scope = f" for experiment {args.experiment!r}" if args.experiment else ""
        raise UserError(f"no KPI windows in {redact(url)}{scope}: run `stgym demo` or a training first")
    output = kpiplot.draw(rows, Path(args.output),
                          f"KPI history ({kpiplot.WINDOW_S} s windows) — {redact(url)}")
    print(f"wrote {output} ({len(rows)} windows, {len(kpiplot.series_by_key(rows))} series)")
    return 0
