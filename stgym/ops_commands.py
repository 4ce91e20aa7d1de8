"""CLI commands of the observability side: logs search, alerts serve, plot kpi."""


def register(subparsers) -> None:
    """Filled by the observability work."""
