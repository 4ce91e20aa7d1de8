"""`constant`: the physics baseline — the cheapest constant pulse that meets a write-error rate.

Scans amplitude × duration of a constant pulse (one grid point after another, the episode
budget shared evenly) and reports the minimum mean energy per switch among the points whose
measured write-error rate is at most `wer_target`. A point is trusted only if it ran enough
episodes to see the target: 1 / wer_target of them, else it must have had no failure at all.
"""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer

AMPLITUDES = np.round(np.linspace(0.3, 1.0, 8), 3)


class ConstantTrainer(PulseTrainer):
    name = "constant"

    def __init__(self, task, options, rng, grid: list[tuple[float, int]] | None = None):
        super().__init__(task, options, rng)
        segments = options.segments
        durations = sorted({max(1, round(segments * f / 8)) for f in range(1, 9)})
        self.grid = grid or [(a, d) for d in durations for a in AMPLITUDES]
        self.runs = np.zeros(len(self.grid), dtype=np.int64)
        self.failures = np.zeros(len(self.grid), dtype=np.int64)
        self.energy_sum = np.zeros(len(self.grid))
        self._queue: list[int] = []
        self._planned = False

    def plan(self, episodes: int) -> None:
        """Share `episodes` evenly over the grid (the first points get the remainder)."""
        per_point, extra = divmod(episodes, len(self.grid))
        self._queue = [
            point for point in range(len(self.grid))
            for _ in range(per_point + (point < extra))
        ]
        self._planned = True

    def run(self, episodes, reporter, should_stop=bool):
        if not self._planned:
            self.plan(episodes)
        return super().run(episodes, reporter, should_stop)

    def pulse(self, point: int) -> np.ndarray:
        amplitude, duration = self.grid[point]
        pulse = np.zeros(self.options.segments)
        pulse[:duration] = amplitude
        return pulse

    def propose(self, n: int) -> np.ndarray:
        points, self._queue = self._queue[:n], self._queue[n:]
        self._last_points = np.array(points, dtype=int)
        return np.array([self.pulse(p) for p in points])

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        points = self._last_points
        np.add.at(self.runs, points, 1)
        np.add.at(self.failures, points, ~batch.success)
        np.add.at(self.energy_sum, points, np.where(batch.success, batch.energy_j, 0.0))
        best = self.best_point()
        objective = -self.energy_per_switch(best) / self.task.energy_budget_j
        return (objective if np.isfinite(objective) else -self.options.failure_penalty), 0.0

    def energy_per_switch(self, point: int) -> float:
        switches = self.runs[point] - self.failures[point]
        return self.energy_sum[point] / switches if switches else np.inf

    def feasible(self) -> np.ndarray:
        """Grid points whose measured write-error rate meets the target, trustworthily."""
        wer = np.divide(self.failures, self.runs, out=np.ones(len(self.grid)), where=self.runs > 0)
        enough = self.runs >= 1.0 / self.options.wer_target
        return (self.runs > 0) & (wer <= self.options.wer_target) & (enough | (self.failures == 0))

    def best_point(self) -> int:
        """The cheapest feasible point; without one, the most reliable (then cheapest) point."""
        energies = np.array([self.energy_per_switch(p) for p in range(len(self.grid))])
        feasible = self.feasible()
        if feasible.any():
            return int(np.argmin(np.where(feasible, energies, np.inf)))
        wer = np.divide(self.failures, self.runs, out=np.ones(len(self.grid)), where=self.runs > 0)
        return int(np.lexsort((energies, wer))[0])

    def best_pulse(self) -> np.ndarray:
        return self.pulse(self.best_point())

    def summary(self) -> dict:
        best = self.best_point()
        amplitude, duration = self.grid[best]
        return {
            "amplitude": float(amplitude),
            "duration_s": duration * self.task.control_interval,
            "episodes": int(self.runs[best]),
            "write_error_rate": float(self.failures[best] / max(self.runs[best], 1)),
            "energy_per_switch_j": float(self.energy_per_switch(best)),
            "meets_wer_target": bool(self.feasible()[best]),
        }
