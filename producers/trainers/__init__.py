"""NumPy trainers over piecewise-constant pulses: constant (baseline), random, cem, reinforce;
and the stable-baselines3 agents ppo and sac (`sb3.py`, the optional `rl` extra)."""
from __future__ import annotations

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


def agent_trainer_class():
    """`producers.trainers.sb3.AgentTrainer`, or a UserError saying how to install it."""
    from stgym.errors import UserError

    try:
        from producers.trainers.sb3 import AgentTrainer
    except ImportError as error:
        raise UserError(f"--algo ppo and sac need the rl extra (stable-baselines3, torch): "
                        f"pip install '.[rl]' ({error})") from None
    return AgentTrainer


__all__ = ["AGENTS", "TRAINERS", "agent_trainer_class", "PulseTrainer", "Progress", "Reporter",
           "TrainerOptions"]
