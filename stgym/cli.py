"""The `stgym` command: one entry point; each package registers its own subcommands.

A package's `commands.py` exposes `register(subparsers)`; it only declares arguments and
imports its heavy modules inside the handler, so `stgym --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from stgym import __version__
from stgym.errors import UserError

COMMAND_MODULES = (
    "physics_ext.commands",
    "producers.commands",
    "streams.commands",
    "sinks.commands",
    "stgym.ops_commands",
    "stgym.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stgym", description="spin-torque-gym: RL for spintronic switching, with live KPIs."
    )
    parser.add_argument("--version", action="version", version=f"stgym {__version__}")
    parser.add_argument(
        "--log-format", choices=("console", "json"), default=None,
        help="console for people, json for services (default: settings.log_format)",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from stgym import logsetup, tracing

    logsetup.configure_logging(
        service=f"stgym-{args.command}", log_format=args.log_format, level=args.log_level
    )
    tracing.configure(f"stgym-{args.command}")  # only with settings.trace_endpoint set
    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        print(f"stgym {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
