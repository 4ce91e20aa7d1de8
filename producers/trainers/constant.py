"""`constant`: the physics baseline — the cheapest constant pulse that meets a write-error rate.

For each amplitude (strongest first) the shortest duration whose write error rate is certified
at most `wer_target` is searched (`ShortestPulse`: screening by binary search, then 6 / target
failure-free certification episodes); the baseline is the certified (amplitude, duration) with the least
mean energy per switch. Episodes left once every amplitude is done go to the best pulse (a
tighter estimate of its energy and error rate). Until something is certified, the best pulse
is the one with the fewest failures seen.
"""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer
from producers.trainers.certify import ShortestPulse

AMPLITUDES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


class ConstantTrainer(PulseTrainer):
    name = "constant"

    def __init__(self, task, options, rng, amplitudes=AMPLITUDES):
        super().__init__(task, options, rng)
        self.amplitudes = list(amplitudes)
        self.certified: list[dict] = []
        self._search = None
        self._next_amplitude = 0
        self._start_next_search()
        self._fallback = (np.inf, self.pulse(self.amplitudes[0], options.segments))

    def pulse(self, amplitude: float, duration: int) -> np.ndarray:
        pulse = np.zeros(self.options.segments)
        pulse[:duration] = amplitude
        return pulse

    def _start_next_search(self) -> None:
        if self._next_amplitude >= len(self.amplitudes):
            self._search = None
            return
        amplitude = self.amplitudes[self._next_amplitude]
        self._next_amplitude += 1
        self._search = ShortestPulse(
            lambda d: self.pulse(amplitude, d), self.options.segments, self.options.wer_target
        )
        self._search.amplitude = amplitude

    @property
    def finished(self) -> bool:
        """Every amplitude has been searched."""
        return self._search is None

    def propose(self, n: int) -> np.ndarray:
        if self._search is None:
            return np.tile(self.best_pulse(), (n, 1))
        return self._search.propose(n)

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        search = self._search
        if search is not None:
            failures = int((~batch.success).sum())
            if failures / len(batch) < self._fallback[0]:
                self._fallback = (failures / len(batch), pulses[0].copy())
            search.record(batch)
            if search.done:
                if search.result is not None:
                    result = dict(search.result)
                    self.certified.append(
                        {"amplitude": search.amplitude, "duration": result.pop("level"), **result}
                    )
                self._start_next_search()
        best = self.best()
        energy = best["energy_per_switch_j"] if best else np.inf
        objective = -energy / self.task.energy_budget_j if best else -self.options.failure_penalty
        return objective, 0.0

    def best(self) -> dict | None:
        """The certified pulse with the least energy per switch (None before the first)."""
        return min(self.certified, key=lambda c: c["energy_per_switch_j"], default=None)

    def best_pulse(self) -> np.ndarray:
        best = self.best()
        if best is None:
            return self._fallback[1]
        return self.pulse(best["amplitude"], best["duration"])

    def summary(self) -> dict:
        best = self.best()
        if best is None:
            return {"meets_wer_target": False, "certified": []}
        return {
            "amplitude": best["amplitude"],
            "duration_s": best["duration"] * self.task.control_interval,
            "episodes": best["episodes"],
            "write_error_rate": best["write_error_rate"],
            "energy_per_switch_j": best["energy_per_switch_j"],
            "meets_wer_target": True,
            "certified": [
                {key: c[key] for key in ("amplitude", "duration", "write_error_rate",
                                         "energy_per_switch_j")}
                for c in self.certified
            ],
        }
