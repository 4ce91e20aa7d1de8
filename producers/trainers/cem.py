"""`cem`: the cross-entropy method over piecewise-constant pulses.

The pulse has `pieces` constant pieces spread over the `segments` control intervals. A
Gaussian over the piece amplitudes (mean μ, per-piece spread σ) is sampled each iteration:
`batch_size / episodes_per_candidate` candidates, each run on `episodes_per_candidate` fresh
episodes (shared seeds across candidates were tried: an iteration of easy start states then
rewards weak pulses, and the search drifts to pulses that fail). The whole population is one
`rollout`, i.e. one batched
integrator call per control interval. The elite fraction by mean score refits μ and σ
(smoothed); the reported rate is the mean spread σ.

When the budget allows (at least twice the certification episodes in its last
`CALIBRATION_SHARE`), the search ends with a calibration: the mean pulse is scaled (energy
×0.01 ... ×4 in steps of 1 %, amplitudes clipped at 1) to the weakest version whose write error rate is certified
at most `wer_target` — `ShortestPulse`, the procedure that certifies the constant baseline,
so the final pulse is compared with the baseline at the same error rate.
"""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer
from producers.trainers.certify import ShortestPulse

SMOOTHING = 0.7
MIN_SPREAD = 0.02
CALIBRATION_SHARE = 0.4
SCALE_LEVELS = 100  # calibration scales the pulse energy by 1/100, 2/100, ... 400/100


class CEMTrainer(PulseTrainer):
    name = "cem"

    def __init__(self, task, options, rng, initial_mean: np.ndarray | None = None):
        super().__init__(task, options, rng)
        pieces = options.pieces
        self.mean = np.full(pieces, 0.6) if initial_mean is None else np.array(initial_mean)
        self.spread = np.full(pieces, 0.2)
        self._candidates = np.empty((0, pieces))
        self._search_episodes = self._episodes_seen = 0
        self._calibration: ShortestPulse | None = None
        self.certified: dict | None = None

    def expand(self, pieces: np.ndarray) -> np.ndarray:
        """Piece amplitudes (..., pieces) -> per-interval amplitudes (..., segments)."""
        owner = np.arange(self.options.segments) * len(self.mean) // self.options.segments
        return pieces[..., owner]

    def scaled(self, level: int) -> np.ndarray:
        """The mean pulse with its amplitudes scaled by sqrt(level / SCALE_LEVELS), clipped to
        1: the Joule energy (∝ J²) grows about linearly with the level."""
        return np.clip(self.expand(self.mean) * np.sqrt(level / SCALE_LEVELS), 0.0, 1.0)

    def run(self, episodes, reporter, should_stop=bool):
        certify = ShortestPulse(self.scaled, 1, self.options.wer_target).certify_episodes
        calibrate = episodes * CALIBRATION_SHARE >= 2 * certify
        self._search_episodes = episodes - int(episodes * CALIBRATION_SHARE * calibrate)
        return super().run(episodes, reporter, should_stop)

    def propose(self, n: int) -> np.ndarray:
        if self._episodes_seen >= self._search_episodes:
            if self._calibration is None:
                self._calibration = ShortestPulse(
                    self.scaled, 4 * SCALE_LEVELS, self.options.wer_target
                )
            if not self._calibration.done:
                return self._calibration.propose(n)
            return np.tile(self.best_pulse(), (n, 1))
        per = self.options.episodes_per_candidate
        count = -(-n // per)
        noise = self.rng.standard_normal((count, len(self.mean)))
        self._candidates = np.clip(self.mean + self.spread * noise, 0.0, 1.0)
        return np.repeat(self.expand(self._candidates), per, axis=0)[:n]

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        self._episodes_seen += len(batch)
        if self._calibration is not None:
            if not self._calibration.done:
                self._calibration.record(batch)
                self.certified = self._calibration.result
            return float(self.episode_scores(batch).mean()), float(self.spread.mean())
        per = self.options.episodes_per_candidate
        scores = self.episode_scores(batch)
        owner = np.arange(len(batch)) // per
        candidate_scores = np.bincount(owner, scores) / np.bincount(owner)
        elite_count = max(2, int(np.ceil(self.options.elite_fraction * len(candidate_scores))))
        ranked = np.argsort(candidate_scores)[::-1][:elite_count]
        elites = self._candidates[ranked]
        self.mean = SMOOTHING * elites.mean(axis=0) + (1 - SMOOTHING) * self.mean
        self.spread = np.maximum(
            SMOOTHING * elites.std(axis=0) + (1 - SMOOTHING) * self.spread, MIN_SPREAD
        )
        return float(candidate_scores[ranked].mean()), float(self.spread.mean())

    def best_pulse(self) -> np.ndarray:
        if self.certified is not None:
            return self.scaled(self.certified["level"])
        return self.expand(self.mean)

    def summary(self) -> dict:
        if self.certified is None:
            return {"meets_wer_target": False}
        return {
            "amplitude_scale": float(np.sqrt(self.certified["level"] / SCALE_LEVELS)),
            "episodes": self.certified["episodes"],
            "write_error_rate": self.certified["write_error_rate"],
            "energy_per_switch_j": self.certified["energy_per_switch_j"],
            "meets_wer_target": True,
        }
