"""CLI commands of this package (see stgym/cli.py)."""


def register(subparsers) -> None:
    """Declares this package's subcommands."""
