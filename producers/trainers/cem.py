"""`cem`: the cross-entropy method over piecewise-constant pulses.

The pulse has `pieces` constant pieces spread over the `segments` control intervals; with
`stop_alignment` (default 0.9, the env's success threshold) the current also goes off as soon
as the observed m·target reaches it — write-and-verify feedback: a fast switcher stops paying
early, a slow one is driven as long as it needs. A Gaussian over the piece amplitudes (mean μ,
per-piece spread σ) is sampled each iteration:
`batch_size / episodes_per_candidate` candidates, each run on `episodes_per_candidate` fresh
episodes (shared seeds across candidates were tried: an iteration of easy start states then
rewards weak pulses, and the search drifts to pulses that fail). The whole population is one
`rollout`, i.e. one batched
integrator call per control interval. The elite fraction by mean score refits μ and σ
(smoothed); the reported rate is the mean spread σ.

When the budget allows (at least twice the certification episodes in its last
`CALIBRATION_SHARE`), the search ends with a calibration: every interval of the mean pulse
is raised to a floor (0.01 ... 1 of j_max), the lowest floor whose write error rate is
certified at most `wer_target` — `ShortestPulse`, the procedure that certifies the constant baseline,
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
FLOOR_LEVELS = 100  # calibration floors: 0.01, 0.02, ... 1.0 of j_max


class CEMTrainer(PulseTrainer):
    name = "cem"

    def __init__(self, task, options, rng, initial_pieces: np.ndarray | None = None):
        super().__init__(task, options, rng)
        pieces = np.full(options.pieces, 0.6) if initial_pieces is None else initial_pieces
        self.mean = np.array(pieces, dtype=float)
        self.spread = np.full(len(self.mean), 0.2)
        self._candidates = np.empty((0, len(self.mean)))
        self._search_episodes = self._episodes_seen = 0
        self._calibration: ShortestPulse | None = None
        self.certified: dict | None = None

    def expand(self, pieces: np.ndarray) -> np.ndarray:
        """Piece amplitudes (..., pieces) -> per-interval amplitudes (..., segments)."""
        owner = np.arange(self.options.segments) * self.options.pieces // self.options.segments
        return pieces[..., owner]

    def floored(self, level: int) -> np.ndarray:
        """The mean pulse with every interval raised to at least level / FLOOR_LEVELS."""
        return np.maximum(self.expand(self.mean), level / FLOOR_LEVELS)

    def run(self, episodes, reporter, should_stop=bool):
        certify = ShortestPulse(self.floored, 1, self.options.wer_target).certify_episodes
        calibrate = episodes * CALIBRATION_SHARE >= 2 * certify
        self._search_episodes = episodes - int(episodes * CALIBRATION_SHARE * calibrate)
        return super().run(episodes, reporter, should_stop)

    def propose(self, n: int) -> np.ndarray:
        if self._episodes_seen >= self._search_episodes:
            if self._calibration is None:
                self._calibration = ShortestPulse(
                    self.floored, FLOOR_LEVELS, self.options.wer_target
                )
            if not self._calibration.done:
                return self._calibration.propose(n)
            return np.tile(self.best_pulse(), (n, 1))
        per = self.options.episodes_per_candidate
        count = -(-n // per)
        noise = self.rng.standard_normal((count, len(self.mean)))
        self._candidates = np.clip(self.mean + self.spread * noise, 0.0, 1.0)
        return np.repeat(self.expand(self._candidates), per, axis=0)[:n]

    def stops(self, n: int) -> np.ndarray | None:
        stop = self.best_stop()
        return None if stop is None else np.full(n, stop)

    def best_stop(self) -> float | None:
        return self.options.stop_alignment

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
            return self.floored(self.certified["level"])
        return self.expand(self.mean)

    def summary(self) -> dict:
        if self.certified is None:
            return {"meets_wer_target": False}
        return {
            "amplitude_floor": self.certified["level"] / FLOOR_LEVELS,
            "episodes": self.certified["episodes"],
            "write_error_rate": self.certified["write_error_rate"],
            "energy_per_switch_j": self.certified["energy_per_switch_j"],
            "meets_wer_target": True,
        }
