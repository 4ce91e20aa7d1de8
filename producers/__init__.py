"""Producers: gymnasium environments for spin-torque switching, NumPy trainers that run on
worker processes, and the episode/training events they publish on the bus.

Importing the package registers `SpinTorque-v0`, `SpinTorqueSOT-v0` and `SpinTorqueArray-v0`.
"""
from producers.envs import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS"]
