"""`cem`: the cross-entropy method over piecewise-constant pulses.

The pulse has `pieces` constant pieces spread over the `segments` control intervals; with
`stop_alignment` (default 0.9, the env's success threshold) the current also goes off as soon
as the observed m·target reaches it — write-and-verify feedback: a fast switcher stops paying
early, a slow one is driven as long as it needs. A Gaussian over the piece amplitudes (mean μ,
per-piece spread σ) is sampled each iteration: at least `MIN_CANDIDATES` candidates, each run
on `episodes_per_candidate` fresh episodes — more for larger budgets (one per 2,000 budget
episodes, at most `MAX_EPISODES_PER_CANDIDATE`), so a candidate's score sees failure rates of a
few percent (shared seeds across candidates were tried: an iteration of easy start states
then rewards weak pulses, and the search drifts to pulses that fail). The whole population is
one `rollout`, i.e. one batched integrator call per control interval. The elite fraction by
mean score refits μ and σ (smoothed); the reported rate is the mean spread σ.

When the budget allows (at least three times the certification episodes in its last
`CALIBRATION_SHARE`: 45,000 episodes at the default target 1e-3), the search ends with a calibration for the write-error-rate target:
the mean pulse plus a ramp rising over the pulse, slope s = 0.02, 0.04, ... 2 of j_max per
pulse length, the lowest s whose write error rate is certified at most `wer_target` —
`ShortestPulse`, the procedure that certifies the constant baseline, so the final pulse is
compared with the baseline at the same error rate. The ramp leaves the start of the pulse
(where, with feedback, most episodes spend their energy) as learned and drives the slow
switchers of the tail harder, which is what the rare failures need.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer
from producers.trainers.certify import ShortestPulse

SMOOTHING = 0.7
MIN_SPREAD = 0.02
CALIBRATION_SHARE = 0.4
RAMP_LEVELS = 100  # calibration ramps: slope 0.02, 0.04, ... 2.0 of j_max per pulse length
MIN_CANDIDATES = 32
MAX_EPISODES_PER_CANDIDATE = 32
BUDGET_PER_CANDIDATE_EPISODE = 2000


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

    def ramped(self, level: int) -> np.ndarray:
        """The mean pulse plus a ramp from 0 at its start to 2 level / RAMP_LEVELS at its end
        (fractions of j_max, at most 1)."""
        ramp = np.arange(self.options.segments) / self.options.segments
        return np.minimum(self.expand(self.mean) + 2.0 * level / RAMP_LEVELS * ramp, 1.0)

    def run(self, episodes, reporter, should_stop=bool):
        certify = ShortestPulse(self.ramped, 1, self.options.wer_target).certify_episodes
        calibrate = episodes * CALIBRATION_SHARE >= 3 * certify
        self._search_episodes = episodes - int(episodes * CALIBRATION_SHARE * calibrate)
        per = min(MAX_EPISODES_PER_CANDIDATE, max(
            self.options.episodes_per_candidate, episodes // BUDGET_PER_CANDIDATE_EPISODE
        ))
        if per > self.options.episodes_per_candidate:
            self.options = dataclasses.replace(
                self.options, episodes_per_candidate=per,
                batch_size=max(self.options.batch_size, per * MIN_CANDIDATES),
            )
        return super().run(episodes, reporter, should_stop)

    def propose(self, n: int) -> np.ndarray:
        if self._episodes_seen >= self._search_episodes:
            if self._calibration is None:
                self._calibration = ShortestPulse(
                    self.ramped, RAMP_LEVELS, self.options.wer_target
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
            return self.ramped(self.certified["level"])
        return self.expand(self.mean)

    def summary(self) -> dict:
        if self.certified is None:
            return {"meets_wer_target": False}
        return {
            "tail_ramp_slope": 2.0 * self.certified["level"] / RAMP_LEVELS,
            "episodes": self.certified["episodes"],
            "write_error_rate": self.certified["write_error_rate"],
            "energy_per_switch_j": self.certified["energy_per_switch_j"],
            "meets_wer_target": True,
        }
