"""The loop every trainer shares: propose pulses, run them as episodes, learn, report.

A trainer searches the piecewise-constant pulses of `segments` control intervals (amplitudes
as fractions of j_max toward the write direction). Each iteration it proposes a batch of pulses,
`rollout` runs one episode per pulse (each episode seeded from the worker's seed stream), the
trainer learns from the outcomes and reports one TrainingEvent-worth of progress. The episode
budget is exact: the last batch is cut to what is left.
Traced (stgym.tracing): each iteration is an `iteration` span holding the reporter's `publish`,
`reward_calculation` (scoring the batch's rewards into the objective and updating the policy)
and `physics_simulation` (the batched rollout: this iteration's validation episodes together
with the next iteration's batch; the first iteration's own batch before them).

The task is a single-device env's `SwitchingTask` or the array env's `ArrayTask`: there an
episode writes a whole pattern (the pulse drives each device that has to flip), its energy is
all devices' and `energy_budget_j` is the N devices' budget, so the same scores apply.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from producers.envs.array import ArrayTask
from producers.envs.task import SwitchingTask
from producers.evaluation import take
from producers.rollout import EpisodeBatch, rollout
from stgym import tracing


VALIDATION_SEED = 0x76616C69  # the held-out episodes' seed stream ("vali")


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    """Knobs shared by the trainers (defaults suit the default SpinTorque-v0)."""

    segments: int = 80
    batch_size: int = 64
    wer_target: float = 1e-3
    learning_rate: float = 0.05
    elite_fraction: float = 0.25
    episodes_per_candidate: int = 4
    pieces: int = 8
    failure_penalty: float = 100.0
    stop_alignment: float | None = 0.9  # cem: current off once m·target reaches it (None: open loop)
    # held-out episodes of the current policy per iteration, never trained on (0: none)
    validation_episodes: int = 8


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a trainer reports after an iteration (the fields of a TrainingEvent)."""

    iteration: int
    objective: float
    learning_rate: float
    model_accuracy: float
    # mean episode score of the current policy on the held-out episodes (None: not measured)
    validation_objective: float | None = None


class Reporter(Protocol):
    def episodes(self, batch: EpisodeBatch) -> None: ...

    def iteration(self, progress: Progress) -> None: ...


class PulseTrainer:
    """Base class: subclasses implement `propose`, `learn` and `best_pulse`."""

    name = ""
    # how a batch of episodes is run: here, or on Ray workers (producers.ray_rollouts)
    rollout = staticmethod(rollout)

    def __init__(self, task: SwitchingTask | ArrayTask, options: TrainerOptions,
                 rng: np.random.Generator):
        self.task = task
        self.options = options
        self.rng = rng
        # the held-out episodes' seeds: drawn once, the same every iteration
        self._validation_seeds = np.random.default_rng(VALIDATION_SEED).integers(
            0, 2**63, size=max(options.validation_episodes, 0), dtype=np.int64)

    def propose(self, n: int) -> np.ndarray:
        """Pulses (n, segments) to run next."""
        raise NotImplementedError

    def learn(self, pulses: np.ndarray, batch: EpisodeBatch) -> tuple[float, float]:
        """Update from a batch; returns (objective, learning rate or spread)."""
        raise NotImplementedError

    def best_pulse(self) -> np.ndarray:
        raise NotImplementedError

    def stops(self, n: int) -> np.ndarray | None:
        """Feedback thresholds (m·target) of the pulses just proposed; None: open loop."""
        return None

    def best_stop(self) -> float | None:
        """The final policy's feedback threshold (None: open loop)."""
        return None

    def close(self) -> None:
        """Release what the rollout holds (Ray, for `producers.ray_rollouts.RayRollouts`)."""
        close = getattr(self.rollout, "close", None)
        if close is not None:
            close()

    def episode_seeds(self, n: int) -> np.ndarray:
        return self.rng.integers(0, 2**63, size=n, dtype=np.int64)

    def run(self, episodes: int, reporter: Reporter, should_stop: Callable[[], bool] = bool):
        """Spend exactly `episodes` episodes (fewer only if `should_stop()` turns true).

        An iteration's held-out validation episodes and the next iteration's batch are one
        rollout (one batched integrator call per interval, one round trip to the Ray workers),
        so iteration i runs batch i + 1 before it reports: the same events in the same order,
        and the same random draws, as running them one after the other (each episode depends
        only on its pulse, stop and seed)."""
        remaining, iteration = episodes, 0
        batch, generation = None, self._generation(remaining, should_stop)
        while generation is not None:
            pulses = generation[0]
            with tracing.span("iteration", iteration=iteration):
                if batch is None:  # the first batch runs alone
                    with tracing.span("physics_simulation", episodes=len(pulses)):
                        batch = self.rollout(self.task, *generation)
                reporter.episodes(batch)
                with tracing.span("reward_calculation"):
                    objective, rate = self.learn(pulses, batch)
                remaining -= len(pulses)
                success_rate = batch.success_rate
                validation = self._validation_rows()  # the policy just learned, before propose
                generation = self._generation(remaining, should_stop)
                parts = [rows for rows in (validation, generation) if rows is not None]
                if parts:
                    with tracing.span("physics_simulation",
                                      episodes=sum(len(rows[1]) for rows in parts)):
                        both = self.rollout(self.task, *_stacked(parts))
                    held_out = 0 if validation is None else len(validation[1])
                    batch = take(both, slice(held_out, None))
                reporter.iteration(Progress(
                    iteration, float(objective), float(rate), success_rate,
                    None if validation is None
                    else float(self.episode_scores(take(both, slice(0, held_out))).mean())))
            iteration += 1
        return self.best_pulse()

    def _generation(self, remaining: int, should_stop: Callable[[], bool]):
        """The next batch's (pulses, seeds, stops); None once the budget is spent or stopped."""
        if remaining <= 0 or should_stop():
            return None
        pulses = self.propose(min(self.options.batch_size, remaining))
        return pulses, self.episode_seeds(len(pulses)), self.stops(len(pulses))

    def _validation_rows(self):
        """The held-out episodes of the current policy (best_pulse, best_stop) as (pulses,
        seeds, stops): `validation_episodes` seeds drawn once from their own stream, the same
        every iteration and never trained on or published, so training vs validation shows
        over-fitting; None without them."""
        n = self.options.validation_episodes
        if n <= 0:
            return None
        stop = self.best_stop()
        return (np.repeat(self.best_pulse()[None, :], n, axis=0), self._validation_seeds,
                None if stop is None else np.full(n, stop))

    def episode_scores(self, batch: EpisodeBatch) -> np.ndarray:
        """The quantity every trainer maximises, per episode: minus the energy (in units of the
        env's energy budget) of a successful write, minus `failure_penalty` for a failed one
        (whatever it spent: among failures, a weaker pulse is no better)."""
        energy = batch.energy_j / self.task.energy_budget_j
        return np.where(batch.success, -energy, -self.options.failure_penalty)


def _stacked(parts: list[tuple]) -> tuple:
    """(pulses, seeds, stops) of several row sets as one; an open-loop set's stops are +inf
    (m·target never reaches it: the same episodes as no stop)."""
    stops = [rows[2] for rows in parts]
    return (np.concatenate([rows[0] for rows in parts]),
            np.concatenate([rows[1] for rows in parts]),
            None if all(s is None for s in stops) else np.concatenate(
                [np.full(len(rows[1]), np.inf) if s is None else s
                 for rows, s in zip(parts, stops)]))

