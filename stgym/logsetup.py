"""Logging configured in one place for every process (extended by the observability work)."""
from __future__ import annotations

import logging

from stgym import settings as settings_module


def configure_logging(service: str, log_format: str | None = None, level: str | None = None) -> None:
    """Console or JSON records on stderr for `service` at `level`."""
    settings = settings_module.load()
    logging.basicConfig(
        level=(level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
