"""NumPy trainers over piecewise-constant pulses: constant (baseline), random, cem, reinforce;
and the stable-baselines3 agents ppo and sac (`sb3.py`, the optional `rl` extra)."""
from __future__ import annotations

import importlib

from producers.trainers.base import PulseTrainer, Progress, Reporter, TrainerOptions
from producers.trainers.cem import CEMTrainer
from producers.trainers.constant import ConstantTrainer
from producers.trainers.random_search import RandomTrainer
from producers.trainers.reinforce import ReinforceTrainer

TRAINERS: dict[str, type[PulseTrainer]] = {
    cls.name: cls for cls in (ConstantTrainer, RandomTrainer, CEMTrainer, ReinforceTrainer)
}

# stable-baselines3 agents: imported only when asked for (torch is an optional extra)
AGENTS = ("ppo", "sac")


def sb3_module():
    """`producers.trainers.sb3`, or a UserError saying how to install it."""
    from stgym.errors import UserError

    try:
        return importlib.import_module("producers.trainers.sb3")
    except ImportError as error:
        raise UserError(f"--algo ppo and sac and their models need the rl extra "
                        f"(stable-baselines3, torch): pip install '.[rl]' ({error})") from None


def agent_trainer_class():
    """`producers.trainers.sb3.AgentTrainer`, or a UserError saying how to install it."""
    return sb3_module().AgentTrainer


__all__ = ["AGENTS", "TRAINERS", "agent_trainer_class", "sb3_module", "PulseTrainer", "Progress", "Reporter",
           "TrainerOptions"]
