"""CLI commands of this package (see stgym/cli.py): `stgym db migrate|status`."""
from __future__ import annotations


def register(subparsers) -> None:
    """Declares this package's subcommands."""
    p = subparsers.add_parser("db", help="KPI store schema (versioned SQL migrations)")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, help_text in (("migrate", "apply pending migrations (idempotent)"),
                            ("status", "list applied and pending migration versions")):
        q = sub.add_parser(name, help=help_text)
        q.add_argument("--db", default=None,
                       help="postgresql://… or sqlite:///path (default: settings.postgres_url)")
        q.set_defaults(handler=run)


def run(args) -> int:
    from sinks.base import migrations
    from sinks.factory import open_sink
    from stgym import settings as settings_module
    from sinks.postgres import redact

    url = args.db or settings_module.load().postgres_url
    sink = open_sink(url)
    try:
        if args.db_command == "migrate":
            sink.setup()  # connects and applies pending migrations
            applied = sink.migration_versions()
            print(f"{redact(url)}: schema at version {max(applied, default=0)} "
                  f"(applied: {', '.join(f'{v:03d}' for v in applied)})")
        else:
            _status(sink, migrations())
    finally:
        sink.close()
    return 0


def _status(sink, known) -> None:
    """Connects without migrating and prints each known version as applied or pending."""
    if hasattr(sink, "_connect_with_retry"):
        import time

        sink.conn = sink._connect_with_retry(time.monotonic() + 10)
    else:
        import sqlite3

        sink.conn = sqlite3.connect(sink.path, isolation_level=None, check_same_thread=False)
    try:
        applied = set(sink.migration_versions())
    except Exception:
        applied = set()
    for migration in known:
        state = "applied" if migration.version in applied else "pending"
        print(f"{migration.version:03d}_{migration.name}: {state}")
