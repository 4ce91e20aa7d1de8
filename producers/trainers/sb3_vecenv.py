"""A stable-baselines3 `VecEnv` over the native vector env: all copies in one batched call.

SB3's `DummyVecEnv` steps its single envs one by one in Python; `NativeVecEnv` hands the whole
batch of actions to `SpinTorqueVectorEnv` (one call of the compiled interval kernel per step)
in its SAME_STEP autoreset mode, SB3's convention: an ended copy's step returns the first
observation of its next episode, the final one is `infos[i]["terminal_observation"]`, and a
time-budget end without success sets `infos[i]["TimeLimit.truncated"]`. Seeding follows
`DummyVecEnv` (`seed(s)`: copy i is reset with seed s + i), so copy i runs exactly the episodes
of a single env seeded s + i — bit for bit (tests/producers/test_rl_sb3.py).

Needs the `rl` extra (`pip install '.[rl]'`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

import producers  # noqa: F401  (registers the env ids)

_FINAL_INFO_KEYS = ("energy_j", "switching_time_s", "success", "sim_steps")


class NativeVecEnv(VecEnv):
    """`num_envs` copies of a registered single-device env id (`SpinTorque-v1`, …) as one
    SB3 VecEnv; `env_kwargs` go to the env as with `gymnasium.make`."""

    def __init__(self, env_id: str, num_envs: int, **env_kwargs) -> None:
        self.venv = gym.make_vec(env_id, num_envs=num_envs,
                                 vectorization_mode="vector_entry_point",
                                 autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
        self.env_id = env_id
        self.render_mode = None
        super().__init__(num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    @property
    def task(self):
        """The switching task every copy shares (scales, device, time budget)."""
        return self.venv.task

    def reset(self) -> np.ndarray:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        step_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            info = step_infos[i]
            for key in _FINAL_INFO_KEYS:
                info[key] = infos[key][i].item()
            info["terminal_observation"] = infos["final_obs"][i]
            info["TimeLimit.truncated"] = bool(truncated[i])
        return obs, rewards.astype(np.float32), dones, step_infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"the copies of {self.env_id} share one task; set {attr_name!r} "
                             "through the env arguments")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        raise AttributeError(f"{self.env_id}'s copies have no per-copy method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None,
                 **env_kwargs) -> VecMonitor:
    """The native SB3 VecEnv with SB3's episode statistics (`VecMonitor`), seeded like
    `stable_baselines3.common.env_util.make_vec_env`."""
    envs = NativeVecEnv(env_id, num_envs, **env_kwargs)
    envs.seed(seed)
    return VecMonitor(envs)
