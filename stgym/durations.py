"""The one duration grammar of every `--since` and `--window` (and the KPI API's since/window).

A number with an optional unit: ``s`` (the default), ``m``, ``h``, ``d`` or ``w``, e.g. ``90s``,
``15m``, ``1.5h``, ``2d``, ``1w``; the result is a whole number of seconds > 0.
"""
from __future__ import annotations

import argparse
import math

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXAMPLES = "90s, 15m, 2h, 1d or 1w"


def parse_duration(text: str) -> int:
    """Seconds of a duration such as ``90s``, ``15m``, ``2h``, ``1d``, ``1w`` or plain ``15``;
    a ValueError naming the text for anything else (zero, negative, fractions of a second)."""
    cleaned = text.strip().lower()
    number, unit = (cleaned[:-1], UNIT_SECONDS[cleaned[-1]]) if cleaned[-1:] in UNIT_SECONDS \
        else (cleaned, 1)
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a duration like {EXAMPLES}, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a duration must be > 0 (like {EXAMPLES}), got {text!r}")
    seconds = value * unit
    if seconds != int(seconds):
        raise ValueError(f"a duration must be whole seconds, got {text!r}")
    return int(seconds)


def duration_arg(text: str) -> int:
    """`parse_duration` as an argparse type: a bad value is a usage error (exit 2)."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
