"""Gymnasium environments for writing MTJ bits; registered when `producers` is imported."""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_IDS = ("SpinTorque-v0", "SpinTorqueSOT-v0", "SpinTorqueArray-v0", "SpinTorque-v1",
           "SpinTorqueSOT-v1", "SpinTorqueArray-v1")
ARRAY_ENV_IDS = ("SpinTorqueArray-v0", "SpinTorqueArray-v1")  # an episode writes up to N bits

_STT = ("producers.envs.spin_torque:SpinTorqueEnv", "producers.envs.vector:SpinTorqueVectorEnv")
_SOT = ("producers.envs.spin_torque:SpinTorqueSOTEnv",
        "producers.envs.vector:SpinTorqueSOTVectorEnv")
# v1: the same classes in the write frame, energy weighted 3x (Version History of their docstrings)
_V1 = {"write_frame": True, "energy_weight": 3.0}
_ARRAY = "producers.envs.array:SpinTorqueArrayEnv"


def register_envs() -> None:
    """Register every environment id with gymnasium (idempotent)."""
    specs = {
        "SpinTorque-v0": (*_STT, {}),
        "SpinTorqueSOT-v0": (*_SOT, {}),
        "SpinTorqueArray-v0": (_ARRAY, None, {}),
        "SpinTorque-v1": (*_STT, _V1),
        "SpinTorqueSOT-v1": (*_SOT, _V1),
        "SpinTorqueArray-v1": (_ARRAY, None, _V1),
    }
    for env_id, (entry_point, vector_entry_point, kwargs) in specs.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point,
                     kwargs=kwargs)
