"""Gymnasium environments for writing MTJ bits; registered when `producers` is imported."""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_IDS = ("SpinTorque-v0", "SpinTorqueSOT-v0", "SpinTorqueArray-v0")


def register_envs() -> None:
    """Register every environment id with gymnasium (idempotent)."""
    specs = {
        "SpinTorque-v0": (
            "producers.envs.spin_torque:SpinTorqueEnv",
            "producers.envs.vector:SpinTorqueVectorEnv",
        ),
        "SpinTorqueSOT-v0": (
            "producers.envs.spin_torque:SpinTorqueSOTEnv",
            "producers.envs.vector:SpinTorqueSOTVectorEnv",
        ),
        "SpinTorqueArray-v0": ("producers.envs.array:SpinTorqueArrayEnv", None),
    }
    for env_id, (entry_point, vector_entry_point) in specs.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)
