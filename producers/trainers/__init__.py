"""NumPy trainers over piecewise-constant pulses: constant (baseline), random, cem, reinforce."""
from __future__ import annotations

from producers.trainers.base import PulseTrainer, Progress, Reporter, TrainerOptions
from producers.trainers.cem import CEMTrainer
from producers.trainers.constant import ConstantTrainer
from producers.trainers.random_search import RandomTrainer
from producers.trainers.reinforce import ReinforceTrainer

TRAINERS: dict[str, type[PulseTrainer]] = {
    cls.name: cls for cls in (ConstantTrainer, RandomTrainer, CEMTrainer, ReinforceTrainer)
}

__all__ = ["TRAINERS", "PulseTrainer", "Progress", "Reporter", "TrainerOptions"]
