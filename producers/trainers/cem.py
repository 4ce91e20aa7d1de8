"""`cem`: the cross-entropy method over piecewise-constant pulses.

A Gaussian over the segment amplitudes (mean μ, per-segment spread σ). Each iteration samples
`batch_size / episodes_per_candidate` candidates and runs every candidate on the same
`episodes_per_candidate` episode seeds (common random numbers: candidates are compared on the
same start states and thermal noise). The whole population is one `rollout`, i.e. one batched
integrator call per control interval. The elite fraction by mean score refits μ and σ
(smoothed); the reported rate is the mean spread σ.
"""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer

SMOOTHING = 0.7
MIN_SPREAD = 0.02


class CEMTrainer(PulseTrainer):
    name = "cem"

    def __init__(self, task, options, rng, initial_mean: np.ndarray | None = None):
        super().__init__(task, options, rng)
        segments = options.segments
        self.mean = np.full(segments, 0.6) if initial_mean is None else np.array(initial_mean)
        self.spread = np.full(segments, 0.25)
        self._candidates = np.empty((0, segments))

    def propose(self, n: int) -> np.ndarray:
        per = self.options.episodes_per_candidate
        count = -(-n // per)
        noise = self.rng.standard_normal((count, self.options.segments))
        self._candidates = np.clip(self.mean + self.spread * noise, 0.0, 1.0)
        return np.repeat(self._candidates, per, axis=0)[:n]

    def episode_seeds(self, n: int) -> np.ndarray:
        per = self.options.episodes_per_candidate
        shared = super().episode_seeds(per)
        return np.tile(shared, -(-n // per))[:n]

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        per = self.options.episodes_per_candidate
        scores = self.episode_scores(batch)
        owner = np.arange(len(batch)) // per
        candidate_scores = np.bincount(owner, scores) / np.bincount(owner)
        elite_count = max(2, int(np.ceil(self.options.elite_fraction * len(candidate_scores))))
        elites = self._candidates[np.argsort(candidate_scores)[::-1][:elite_count]]
        self.mean = SMOOTHING * elites.mean(axis=0) + (1 - SMOOTHING) * self.mean
        self.spread = np.maximum(
            SMOOTHING * elites.std(axis=0) + (1 - SMOOTHING) * self.spread, MIN_SPREAD
        )
        return float(np.sort(candidate_scores)[::-1][:elite_count].mean()), float(
            self.spread.mean()
        )

    def best_pulse(self) -> np.ndarray:
        return self.mean.copy()
