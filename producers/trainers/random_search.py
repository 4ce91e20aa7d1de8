"""`random`: uniformly random pulses — the floor every other trainer must clear."""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer


class RandomTrainer(PulseTrainer):
    """Each episode's amplitudes are uniform in [-1, 1]; keeps the best-scoring pulse seen."""

    name = "random"

    def __init__(self, task, options, rng):
        super().__init__(task, options, rng)
        self._best = np.zeros(options.segments)
        self._best_score = -np.inf

    def propose(self, n: int) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(n, self.options.segments))

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        scores = self.episode_scores(batch)
        best = int(np.argmax(scores))
        if scores[best] > self._best_score:
            self._best, self._best_score = pulses[best].copy(), float(scores[best])
        return float(scores.mean()), 0.0

    def best_pulse(self) -> np.ndarray:
        return self._best
