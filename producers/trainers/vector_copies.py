"""Copies of a single-device env in one native vector env, stepped the stable-baselines3 way —
without importing SB3 (or torch), so a Ray worker holding copies starts in a fraction of a
second. `NativeVecEnv` (in process) and each Ray actor of `RayVecEnv` (producers.trainers.
sb3_vecenv) hold one.

SAME_STEP autoreset, SB3's convention: an ended copy's step returns the first observation of
its next episode, the final one is `infos[i]["terminal_observation"]`, and a time-budget end
without success sets `infos[i]["TimeLimit.truncated"]`; an ended copy's info also holds the
episode's `energy_j`, `switching_time_s`, `success` and `sim_steps`.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import producers  # noqa: F401  (registers the env ids)

FINAL_INFO_KEYS = ("energy_j", "switching_time_s", "success", "sim_steps")


class VectorCopies:
    """`num_envs` copies of a registered single-device env id (`SpinTorque-v1`, …);
    `env_kwargs` go to its vector env as with `gymnasium.make_vec` (`threads` included)."""

    def __init__(self, env_id: str, num_envs: int, **env_kwargs) -> None:
        self.venv = gym.make_vec(env_id, num_envs=num_envs,
                                 vectorization_mode="vector_entry_point",
                                 autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
        self.num_envs = num_envs

    @property
    def task(self):
        """The switching task every copy shares (scales, device, time budget)."""
        return self.venv.task

    def reset(self, seeds: list[int] | None) -> np.ndarray:
        """New episodes in every copy: copy i's generator from `seeds[i]` (None: keep the
        generators, or fresh entropy on the first reset)."""
        obs, _ = self.venv.reset(seed=seeds)
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """SB3's step: observations, float32 rewards, dones, one info dict per copy."""
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = terminated | truncated
        step_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            info = step_infos[i]
            for key in FINAL_INFO_KEYS:
                info[key] = infos[key][i].item()
            info["terminal_observation"] = infos["final_obs"][i]
            info["TimeLimit.truncated"] = bool(truncated[i])
        return obs, rewards.astype(np.float32), dones, step_infos

    def close(self) -> None:
        self.venv.close()
