"""The dead man's switch of `stgym alerts serve`: no Watchdog for the timeout -> one CRITICAL
record and stgym_watchdog_missing 1; the next Watchdog resets it. Fake clock, no services."""
from __future__ import annotations

import logging

import pytest

from stgym import alerts

WATCHDOG = {"status": "firing", "labels": {"alertname": "Watchdog", "severity": "none"},
            "annotations": {"summary": "Always firing"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def critical_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "stgym.alerts" and r.levelno == logging.CRITICAL]


def test_switch_trips_once_after_the_timeout_and_resets_on_the_next_watchdog(caplog):
    caplog.set_level(logging.INFO, logger="stgym.alerts")
    clock = Clock()
    switch = alerts.DeadMansSwitch(120, clock)
    trips = alerts.WATCHDOG_TRIPS._value.get()
    clock.now += 119
    assert not switch.check() and alerts.WATCHDOG_MISSING._value.get() == 0
    assert alerts.handle_payload({"alerts": [WATCHDOG]}, "watchdog", switch) == 1
    clock.now += 119
    assert not switch.check()
    clock.now += 2
    assert switch.check() and switch.check()  # tripped, and stays tripped
    [record] = critical_records(caplog)
    assert record.alertname == "Watchdog" and record.alert_status == "missing"
    assert "no Watchdog alert for 121 s" in record.getMessage()
    assert alerts.WATCHDOG_MISSING._value.get() == 1
    assert alerts.WATCHDOG_TRIPS._value.get() == trips + 1
    alerts.handle_payload({"alerts": [WATCHDOG]}, "watchdog", switch)
    assert not switch.check() and alerts.WATCHDOG_MISSING._value.get() == 0
    assert any("alerting path is back" in r.getMessage() for r in caplog.records)


def test_watchdog_is_a_heartbeat_not_a_logged_alert(caplog):
    caplog.set_level(logging.DEBUG, logger="stgym.alerts")
    switch = alerts.DeadMansSwitch(60, Clock())
    resolved = dict(WATCHDOG, status="resolved")
    alerts.handle_payload({"alerts": [WATCHDOG, resolved]}, "watchdog", switch)
    assert not [r for r in caplog.records if r.getMessage().startswith("alert ")]


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="watchdog timeout must be > 0 s, got 0"):
        alerts.DeadMansSwitch(0)
