"""How many OpenMP threads a repeated short parallel call should use, found by timing it.

On an idle machine the native vector env's step (64 copies, ~100 µs of integration) takes
about 0.6× as long on 2 threads as on 1; on a 2-core machine where another process is busy,
OpenMP's barrier waits for a descheduled thread and the same step took 10× longer on 2 threads
than on 1. Which holds changes while a run goes on, so the choice is measured, not guessed.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

PROBE_EVERY = 32  # calls between two timings of the choice not in use, times how much slower it was
SMOOTHING = 0.25  # weight of the newest timing in a choice's running mean


class ThreadChooser:
    """Runs `call(threads)` with 1 or `most` threads, whichever has the lower running mean
    of its wall time; now and then the other one is timed once, so a change of load is
    noticed: after PROBE_EVERY calls times the ratio of their means (a choice 50× slower is
    probed 50× less often, so probing costs a few percent). A choice's first call is not timed
    (it starts OpenMP's threads). Results must not depend on the thread count (the interval
    kernel's do not)."""

    def __init__(self, most: int):
        self.choices = (1, most) if most > 1 else (1,)
        self.mean_s: dict[int, float | None] = {choice: None for choice in self.choices}
        self._started: set[int] = set()
        self.calls = 0
        self._next_probe = PROBE_EVERY
        self.current = self.choices[0]  # what the next call uses unless it probes

    def _choose(self) -> None:
        """The untimed choice first, else the one with the lower mean."""
        self.current = min(
            self.choices, key=lambda c: -1.0 if self.mean_s[c] is None else self.mean_s[c]
        )

    def run(self, call: Callable[[int], T], work: float = 1.0) -> T:
        """`call(threads)`; its wall time per unit of `work` (e.g. rows stepped) is what the
        choices are compared by."""
        self.calls += 1
        threads = best = self.current
        if len(self.choices) > 1 and self.calls >= self._next_probe:
            threads = self.choices[1] if best == self.choices[0] else self.choices[0]
        started = time.perf_counter()
        result = call(threads)
        elapsed = (time.perf_counter() - started) / work
        if threads not in self._started:
            self._started.add(threads)
            return result
        mean = self.mean_s[threads]
        self.mean_s[threads] = elapsed if mean is None else mean + SMOOTHING * (elapsed - mean)
        self._choose()
        if threads != best:
            ratio = self.mean_s[threads] / (self.mean_s[best] or self.mean_s[threads])
            self._next_probe = self.calls + PROBE_EVERY * max(1.0, ratio)
        return result
