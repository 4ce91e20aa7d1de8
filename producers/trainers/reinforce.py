"""`reinforce`: a Gaussian policy gradient with a baseline, in NumPy.

The policy is time-indexed: the action of control interval k is N(μ_k, σ²) (toward the write
direction), σ = exp(log σ) shared. The gradient of the expected score is estimated with the
score function, the batch-mean score as baseline and advantages scaled to unit spread, using
only the intervals each episode actually ran; μ and log σ take Adam steps. The final policy is
the mean pulse μ.
"""
from __future__ import annotations

import numpy as np

from producers.rollout import EpisodeBatch
from producers.trainers.base import PulseTrainer

ADAM_BETAS = (0.9, 0.999)
MIN_LOG_STD = np.log(0.03)


class ReinforceTrainer(PulseTrainer):
    name = "reinforce"

    def __init__(self, task, options, rng):
        super().__init__(task, options, rng)
        segments = options.segments
        self.params = np.concatenate([np.full(segments, 0.6), [np.log(0.25)]])
        self._moments = (np.zeros_like(self.params), np.zeros_like(self.params))
        self._updates = 0

    @property
    def mean(self) -> np.ndarray:
        return self.params[:-1]

    @property
    def std(self) -> float:
        return float(np.exp(self.params[-1]))

    def propose(self, n: int) -> np.ndarray:
        self._noise = self.rng.standard_normal((n, self.options.segments))
        return self.mean + self.std * self._noise

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        scores = self.episode_scores(batch)
        advantage = scores - scores.mean()
        if advantage.std() > 0:
            advantage /= advantage.std()
        ran = np.arange(self.options.segments)[None, :] < batch.steps[:, None]
        noise = self._noise * ran
        grad_mean = (advantage[:, None] * noise).mean(axis=0) / self.std
        grad_log_std = (advantage * ((noise**2 - ran).sum(axis=1))).mean()
        self._adam_ascend(np.concatenate([grad_mean, [grad_log_std]]))
        self.params[:-1] = np.clip(self.mean, -1.0, 1.0)
        self.params[-1] = max(self.params[-1], MIN_LOG_STD)
        return float(scores.mean()), self.options.learning_rate

    def _adam_ascend(self, gradient: np.ndarray) -> None:
        beta1, beta2 = ADAM_BETAS
        first, second = self._moments
        self._updates += 1
        first[:] = beta1 * first + (1 - beta1) * gradient
        second[:] = beta2 * second + (1 - beta2) * gradient**2
        first_hat = first / (1 - beta1**self._updates)
        second_hat = second / (1 - beta2**self._updates)
        self.params += self.options.learning_rate * first_hat / (np.sqrt(second_hat) + 1e-8)

    def best_pulse(self) -> np.ndarray:
        return np.clip(self.mean, -1.0, 1.0)
