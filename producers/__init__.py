"""Producers: gymnasium environments for spin-torque switching, NumPy trainers that run on
worker processes, and the episode/training events they publish on the bus.

Importing the package registers the ids of `ENV_IDS` (`SpinTorque-v0`, `-v1`, the SOT and
array envs).
"""
from producers.envs import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS"]
