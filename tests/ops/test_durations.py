"""The one duration grammar (stgym/durations.py) of every --since / --window."""
import subprocess
import sys

import pytest

from stgym.durations import parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("1m", 60), ("15m", 900), ("2h", 7200), ("1d", 86400), ("2d", 172800),
    ("1w", 604800), ("15", 15), ("1.5m", 90), (" 30S ", 30),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "-1h", "abc", "1.5s", "nanm", "infh", "soon", "1y"])
def test_bad_durations_are_refused_naming_the_text(text):
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("argv", [
    ["kpi", "--since"], ["kpi", "--window"], ["plot", "kpi", "--since"], ["logs", "search", "--since"],
])
def test_every_since_and_window_takes_the_same_grammar(argv, tmp_path):
    """A bad value is the same usage error everywhere (exit 2, naming it); a week parses."""
    def run(value):
        return subprocess.run([sys.executable, "-m", "stgym.cli", *argv, value, "--help"],
                              capture_output=True, text=True, timeout=120)
    bad = run("soon")
    assert bad.returncode == 2 and "'soon'" in bad.stderr and "1w" in bad.stderr
    assert run("1w").returncode == 0  # parsed, then --help exits 0
