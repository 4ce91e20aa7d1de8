"""CLI commands of this package (see stgym/cli.py): `stgym stream`, `stgym kpi`, `stgym demo`,
`stgym serve`, `stgym dlq`."""
from __future__ import annotations

import argparse

from stgym.durations import duration_arg


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    """Declares this package's subcommands."""
    p = subparsers.add_parser(
        "stream", help="run a Faust stream worker: Kafka -> KPIs -> PostgreSQL + /metrics",
        description="Consume episode, training and experiment events from Kafka, aggregate KPIs "
                    "into the database (idempotent by event id) and serve /metrics, /health, /ready.",
    )
    p.add_argument("--bus", default=None, help="kafka://HOST:PORT (default: settings.kafka_url)")
    p.add_argument("--db", default=None, help="postgresql://… or sqlite:///path (default: settings.postgres_url)")
    p.add_argument("--web-port", type=int, default=None,
                   help="port of /metrics /health /ready (default: stream_web_port + worker id)")
    p.add_argument("--worker-id", type=int, default=0, help="index of this worker (default 0)")
    p.add_argument("--app-id", default="stgym-stream",
                   help="Faust app id = Kafka consumer group shared by the workers")
    p.add_argument("--batch-size", type=_positive_int, default=2000,
                   help="max events per database transaction (default 2000)")
    p.add_argument("--engine", choices=("faust", "aiokafka"), default="faust",
                   help="faust (default): a Faust agent; aiokafka: the same batch processing on a "
                        "plain consumer, several times faster (a group must not mix engines)")
    p.add_argument("--offset-reset", choices=("earliest", "latest"), default="earliest",
                   help="where a new consumer group starts (default earliest: nothing is skipped)")
    p.set_defaults(handler=run_stream)

    p = subparsers.add_parser(
        "kpi", help="print KPIs from the store",
        description="KPIs per (experiment, device type, algorithm), from PostgreSQL or SQLite.",
    )
    p.add_argument("--db", default=None, help="database URL (default: the demo's SQLite file)")
    p.add_argument("--experiment", default=None)
    p.add_argument("--device-type", default=None)
    p.add_argument("--algorithm", default=None)
    p.add_argument("--since", type=duration_arg, default=None, help="only events newer than this (e.g. 1h)")
    p.add_argument("--window", type=duration_arg, default=None, help="one row per tumbling window (e.g. 1m)")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows")
    p.set_defaults(handler=run_kpi)

    p = subparsers.add_parser(
        "demo", help="train on the embedded pipeline and show the KPIs (no services needed)",
        description="Trainer -> in-process memory bus -> the stream aggregation -> SQLite, with a "
                    "local /metrics endpoint; prints the KPI table.",
    )
    p.add_argument("--episodes", type=_positive_int, default=4000,
                   help="episodes to train, split over STT and SOT (default 4000)")
    p.add_argument("--db", default=None, help="database URL (default: SQLite in the user data dir)")
    p.add_argument("--web-port", type=int, default=0,
                   help="port of the demo's /metrics (default: any free port)")
    p.add_argument("--api-port", type=int, default=0,
                   help="port of the live dashboard and KPI API (default: any free port)")
    p.add_argument("--keep-serving", action="store_true",
                   help="keep the dashboard up after training, until Ctrl-C")
    p.add_argument("--json", action="store_true", help="print the KPI rows as JSON")
    p.set_defaults(handler=run_demo)

    p = subparsers.add_parser(
        "serve", help="the KPI HTTP API and live dashboard over the store (read only)",
        description="Serve /api/v1/experiments, /api/v1/kpis, /api/v1/experiments/ID/episodes, the "
                    "live dashboard at /, and /health /ready /metrics, reading the KPI store "
                    "through a read-only role (PostgreSQL) or a read-only file (SQLite).",
    )
    p.add_argument("--db", default=None,
                   help="database URL (default: settings.postgres_reader_url, the read-only role)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings.api_port)")
    p.set_defaults(handler=run_serve)

    p = subparsers.add_parser(
        "dlq", help="list the records the stream workers refused (each once)",
        description="Read the dead-letter topic from its start: one line per refused record; "
                    "copies sent again after a worker restart (same dlq_id) are counted, not "
                    "repeated.")
    p.add_argument("--bus", default=None, help="kafka://HOST:PORT (default: settings.kafka_url)")
    p.add_argument("--reason", default=None, help="only this reason (e.g. unstorable)")
    p.add_argument("--limit", type=int, default=50, help="the last N records (0: all)")
    p.add_argument("--json", action="store_true",
                   help="one JSON envelope a line (original_b64, copies)")
    p.set_defaults(handler=run_dlq)


def run_stream(args) -> int:
    from stgym import settings as settings_module

    if args.engine == "aiokafka":
        from streams.fastconsumer import AiokafkaWorker as Worker
    else:
        from streams.app import StreamWorker as Worker

    settings = settings_module.load()
    port = args.web_port if args.web_port is not None else settings.stream_web_port + args.worker_id
    worker = Worker(
        bus_url=args.bus or settings.kafka_url,
        db_url=args.db or settings.postgres_url,
        web_port=port,
        worker_id=str(args.worker_id),
        app_id=args.app_id,
        batch_size=args.batch_size,
        offset_reset=args.offset_reset,
    )
    return worker.run()


def _open_for_reading(url: str):
    from sinks.factory import open_sink

    sink = open_sink(url)
    sink.setup()
    return sink


def run_kpi(args) -> int:
    import json

    from stgym import settings as settings_module

    url = args.db or settings_module.load().sqlite_url
    sink = _open_for_reading(url)
    try:
        rows = sink.query_kpis(args.experiment, args.device_type, args.algorithm,
                               since_s=args.since, window_s=args.window)
    finally:
        sink.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from streams.kpitable import print_kpi_table

        print_kpi_table(rows, title=f"KPIs from {_redact(url)}")
    return 0


def _redact(url: str) -> str:
    from sinks.postgres import redact

    return redact(url)


def run_serve(args) -> int:
    from stgym import settings as settings_module
    from streams.api import serve

    settings = settings_module.load()
    return serve(args.db or settings.postgres_reader_url,
                 args.port if args.port is not None else settings.api_port, host=settings.host)


def run_dlq(args) -> int:
    from streams.dlq import run

    return run(args)


def run_demo(args) -> int:
    from streams.demo import run

    return run(args)
