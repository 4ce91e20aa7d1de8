"""The weakest pulse of a family that meets a write-error-rate target, found sequentially.

`pulse_of(d)` is a pulse whose energy grows with its strength level d = 1, 2, ... (the
duration in control intervals for constant pulses, an amplitude scale for shaped ones) and
whose write error rate falls with it. A binary search over d screens each probe with a few episodes
(rejected at the first failure beyond `target · n`), then the weakest screened level is
certified: 6 / target episodes without a single failure (the one-sided 95 % upper
confidence bound of its write error rate is then half the target). A failure moves the search
one level up. Trying level after level until one passes favours a lucky level; the margin of a
factor two keeps a certified pulse below the target on fresh episodes (measured with 3 / target
it did not: pulses at 1.3-1.5x the target got through). A failed certification moves the level
up by `CLIMB` (2 %, at least 1), so climbing out of a long near-miss stretch stays affordable.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from producers.rollout import EpisodeBatch

CLIMB = 0.02  # a level failing certification moves up by 2 % (at least one level)


class ShortestPulse:
    """A sequential search driven by the trainer loop: `propose(n)`, then `record(batch)`."""

    def __init__(self, pulse_of: Callable[[int], np.ndarray], longest: int, wer_target: float):
        self.pulse_of = pulse_of
        self.longest = longest
        self.target = wer_target
        self.screen_episodes = max(8, math.ceil(0.25 / wer_target))
        self.certify_episodes = math.ceil(6.0 / wer_target)
        self.lo, self.hi = 0, longest + 1  # lo failed; hi passed screening (longest + 1: unknown)
        self.level = (self.lo + self.hi) // 2
        self.certifying = False
        self._reset_counts()
        self.done = False
        self.result: dict | None = None

    def _reset_counts(self) -> None:
        self.runs = self.failures = 0
        self.energy_sum = 0.0

    def propose(self, n: int) -> np.ndarray:
        return np.tile(self.pulse_of(self.level), (n, 1))

    def record(self, batch: EpisodeBatch) -> None:
        self.runs += len(batch)
        self.failures += int((~batch.success).sum())
        self.energy_sum += float(batch.energy_j[batch.success].sum())
        if self.certifying:
            self._certify_step()
        else:
            self._screen_step()

    def _screen_step(self) -> None:
        if self.failures > self.target * self.screen_episodes:
            self._move(passed=False)
        elif self.runs >= self.screen_episodes:
            self._move(passed=True)

    def _move(self, passed: bool) -> None:
        if passed:
            self.hi = self.level
        else:
            self.lo = self.level
        self._reset_counts()
        if self.hi - self.lo > 1:
            self.level = (self.lo + self.hi) // 2
        elif self.hi > self.longest:
            self.done = True  # even the longest pulse fails
        else:
            self.level, self.certifying = self.hi, True

    def _certify_step(self) -> None:
        if self.failures > 0:
            self._reset_counts()
            if self.level >= self.longest:
                self.done = True
            else:
                self.level = min(self.longest, self.level + max(1, round(CLIMB * self.level)))
        elif self.runs >= self.certify_episodes:
            self.done = True
            self.result = {
                "level": self.level,
                "episodes": self.runs,
                "failures": self.failures,
                "write_error_rate": self.failures / self.runs,
                "energy_per_switch_j": self.energy_sum / max(self.runs - self.failures, 1),
            }
