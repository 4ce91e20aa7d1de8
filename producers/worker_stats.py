"""Running totals of a worker or a whole run, what the progress callback sees, and the
summary `train` returns."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from producers.rollout import EpisodeBatch


@dataclasses.dataclass
class WorkerStats:
    """Running totals of one worker (or of a whole run, summed)."""

    episodes: int = 0
    successes: int = 0
    energy_success_j: float = 0.0
    bits_success: int = 0  # bits written by the successful episodes (1 per device episode)
    switching_time_sum_s: float = 0.0
    switching_time_count: int = 0
    sim_steps: int = 0
    sim_wall_s: float = 0.0

    def add_batch(self, batch: EpisodeBatch) -> None:
        self.episodes += len(batch)
        self.successes += int(batch.success.sum())
        self.energy_success_j += float(batch.energy_j[batch.success].sum())
        self.bits_success += int(batch.bits[batch.success].sum())
        switched = batch.success & np.isfinite(batch.switching_time_s)
        self.switching_time_sum_s += float(batch.switching_time_s[switched].sum())
        self.switching_time_count += int(switched.sum())
        self.sim_steps += int(batch.sim_steps.sum())
        self.sim_wall_s += float(batch.wall_time_s.sum())

    def merge(self, other: WorkerStats) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass
class RunProgress:
    """What the progress callback sees: totals over every worker so far."""

    episodes: int
    total_episodes: int
    success_rate: float
    energy_per_switch_j: float
    energy_per_bit_j: float = math.nan


@dataclasses.dataclass
class TrainSummary:
    """The outcome of `train`; energies in J, times in s."""

    experiment: str
    algorithm: str
    env_id: str
    episodes: int
    success_rate: float
    energy_per_switch_j: float  # per successful episode (an array episode writes up to N bits)
    energy_per_bit_j: float  # per bit the successful episodes wrote
    mean_switching_time_s: float
    sim_steps: int
    sim_steps_per_s: float
    wall_time_s: float
    run_ids: list[str]
    failed_workers: list[str]
    run_dir: str
    policy_path: str | None
    policy_metrics: dict
    mlflow_run_id: str | None = None  # the MLflow parent run (producers.tracking)

    @property
    def ok(self) -> bool:
        return not self.failed_workers

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        return data


def summarise(stats: WorkerStats) -> dict:
    return {
        "episodes": stats.episodes,
        "success_rate": stats.successes / stats.episodes if stats.episodes else 0.0,
        "energy_per_switch_j": stats.energy_success_j / stats.successes
        if stats.successes else math.nan,
        "energy_per_bit_j": stats.energy_success_j / stats.bits_success
        if stats.bits_success else math.nan,
        "mean_switching_time_s": stats.switching_time_sum_s / stats.switching_time_count
        if stats.switching_time_count else math.nan,
        "sim_steps": stats.sim_steps,
        "sim_steps_per_s": stats.sim_steps / stats.sim_wall_s if stats.sim_wall_s else 0.0,
    }


def batch_totals(batch: EpisodeBatch) -> dict:
    """A batch's totals as a plain dict (what a worker process sends its parent)."""
    stats = WorkerStats()
    stats.add_batch(batch)
    return dataclasses.asdict(stats)
