"""stable-baselines3 `VecEnv`s over the native vector env: all copies in one batched call
(`NativeVecEnv`), or their slices on K Ray workers, one batched call each (`RayVecEnv`).

SB3's `DummyVecEnv` steps its single envs one by one in Python; `NativeVecEnv` hands the whole
batch of actions to `SpinTorqueVectorEnv` (one call of the compiled interval kernel per step)
in its SAME_STEP autoreset mode, SB3's convention (`producers.trainers.vector_copies`).
Seeding follows `DummyVecEnv` (`seed(s)`: copy i is reset with seed s + i), so copy i runs
exactly the episodes of a single env seeded s + i — bit for bit (tests/producers/
test_rl_sb3.py); and so does copy i of a `RayVecEnv` (tests/producers/test_ray_vecenv.py).

Needs the `rl` extra (`pip install '.[rl]'`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from producers.trainers.vector_copies import VectorCopies

log = logging.getLogger(__name__)


class _SharedTaskVecEnv(VecEnv):
    """A VecEnv whose copies share one task: no per-copy attributes, methods or wrappers."""

    env_id = ""

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

    def _reset_seeds_list(self) -> list[int] | None:
        """The copies' seeds for this reset (None: unseeded), then forgotten as SB3 does."""
        seeds = None if all(s is None for s in self._seeds) else [int(s) for s in self._seeds]
        self._reset_seeds()
        self._reset_options()
        return seeds


class NativeVecEnv(_SharedTaskVecEnv):
    """`num_envs` copies of a registered single-device env id (`SpinTorque-v1`, …) as one
    SB3 VecEnv; `env_kwargs` go to the env as with `gymnasium.make`."""

    def __init__(self, env_id: str, num_envs: int, **env_kwargs) -> None:
        self.copies = VectorCopies(env_id, num_envs, **env_kwargs)
        self.env_id = env_id
        self.render_mode = None
        venv = self.copies.venv
        super().__init__(num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    @property
    def task(self):
        """The switching task every copy shares (scales, device, time budget)."""
        return self.copies.task

    def reset(self) -> np.ndarray:
        return self.copies.reset(self._reset_seeds_list())

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        return self.copies.step(self._actions)

    def close(self) -> None:
        self.copies.close()


class RayVecEnv(_SharedTaskVecEnv):
    """`num_envs` copies of `env_id` on `workers` Ray actors (`VectorCopiesActor`, one CPU
    each): actor k holds a contiguous slice of the copies in one native vector env and steps
    it in one batched call; `step_async` scatters the actions' slices, `step_wait` gathers the
    observations, rewards, dones and infos in copy order. `address` joins a Ray cluster
    (None: a local instance with `workers` CPUs, unless this process has one).

    An ended copy's info names the Ray worker that ran the episode (`worker`: `ray-<12 hex>`)
    and the copy's seed (`seed`). A lost actor (its process killed, its node gone) is
    replaced by a new one whose copies start new episodes, seeded `num_envs` past their
    former seeds; the lost copies' unfinished episodes are dropped: that step ends them as
    truncated at their last observation, reward 0, with `worker_lost` in their info (no
    episode statistics: they are no episodes to publish). `replacements` counts them.
    """

    def __init__(self, env_id: str, num_envs: int, workers: int, address: str | None = None,
                 **env_kwargs) -> None:
        from producers.ray_rollouts import VectorCopiesActor, start_ray

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        template = gym.make(env_id, **env_kwargs)
        self._task = template.unwrapped.task
        self.render_mode = None
        super().__init__(num_envs, template.observation_space, template.action_space)
        template.close()
        self.slices = [rows for rows in np.array_split(np.arange(num_envs), workers) if len(rows)]
        self._actors: list = []
        self._owned = start_ray(workers, address)  # before `import ray` (its token env)
        import ray

        self.ray = ray
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < len(self.slices):  # the actors beyond would wait for a CPU forever
            self.close()
            raise ValueError(f"{len(self.slices)} Ray workers of one CPU each, but the Ray "
                             f"cluster has {cpus:g} CPUs")
        self._remote = ray.remote(num_cpus=1)(VectorCopiesActor)
        self._actors = [self._remote.remote(env_id, len(rows), self.env_kwargs)
                        for rows in self.slices]
        self.workers = ray.get([actor.worker_id.remote() for actor in self._actors])
        self._copy_seeds: list[int | None] = [None] * num_envs
        self._obs: np.ndarray | None = None
        self._pending: list = []
        self.replacements = 0

    @property
    def task(self):
        """The switching task every copy shares (scales, device, time budget)."""
        return self._task

    def reset(self) -> np.ndarray:
        seeds = self._reset_seeds_list()
        self._copy_seeds = [None] * self.num_envs if seeds is None else seeds
        refs = [actor.reset.remote(self._slice_seeds(k)) for k, actor in enumerate(self._actors)]
        parts = []
        for k, ref in enumerate(refs):
            try:
                parts.append(self.ray.get(ref))
            except self.ray.exceptions.RayActorError:
                parts.append(self._replace(k))
        self._obs = np.concatenate(parts)
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [actor.step.remote(actions[rows])
                         for actor, rows in zip(self._actors, self.slices)]

    def step_wait(self):
        parts = []
        for k, ref in enumerate(self._pending):
            try:
                obs, rewards, dones, infos = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                obs, rewards, dones, infos = self._dropped(k, self._replace(k))
            else:
                for j in np.flatnonzero(dones):
                    infos[j]["worker"] = self.workers[k]
                    infos[j]["seed"] = self._copy_seeds[self.slices[k][j]]
            parts.append((obs, rewards, dones, infos))
        self._pending = []
        self._obs = np.concatenate([p[0] for p in parts])
        return (self._obs.copy(), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), [i for p in parts for i in p[3]])

    def _slice_seeds(self, k: int) -> list[int] | None:
        seeds = [self._copy_seeds[i] for i in self.slices[k]]
        return None if seeds[0] is None else seeds

    def _replace(self, k: int) -> np.ndarray:
        """A new actor for slice k (the old one is lost), its copies reset on new seeds;
        returns their first observations."""
        rows = self.slices[k]
        log.warning("Ray worker %s (copies %d-%d of %s) lost: replaced, its copies' unfinished "
                    "episodes dropped", self.workers[k], rows[0], rows[-1], self.env_id)
        self.ray.kill(self._actors[k])
        for i in rows:
            if self._copy_seeds[i] is not None:
                self._copy_seeds[i] += self.num_envs
        self._actors[k] = self._remote.remote(self.env_id, len(rows), self.env_kwargs)
        self.workers[k] = self.ray.get(self._actors[k].worker_id.remote())
        self.replacements += 1
        return self.ray.get(self._actors[k].reset.remote(self._slice_seeds(k)))

    def _dropped(self, k: int, first_obs: np.ndarray) -> tuple:
        """The step of slice k's lost copies: each truncated at its last observation."""
        rows = self.slices[k]
        infos = [{"terminal_observation": self._obs[i], "TimeLimit.truncated": True,
                  "worker_lost": True} for i in rows]
        return first_obs, np.zeros(len(rows), np.float32), np.ones(len(rows), bool), infos

    def close(self) -> None:
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
        if self._owned:
            self.ray.shutdown()
            self._owned = False


class EpisodeMonitor(VecMonitor):
    """SB3's `VecMonitor` (episode return, length and time in `infos[i]["episode"]`, which the
    agents log as rollout/ep_rew_mean and ep_len_mean, and `episode_count`), except that a lost
    Ray worker's dropped copies (`worker_lost`) end no episode there: no statistics, not
    counted — as on the bus. (Without a results file: its rows could not be taken back.)"""

    def step_wait(self):
        obs, rewards, dones, infos = super().step_wait()
        for info in infos:
            if info.get("worker_lost"):
                del info["episode"]
                self.episode_count -= 1
        return obs, rewards, dones, infos


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None, ray_workers: int = 0,
                 ray_address: str | None = None, **env_kwargs) -> EpisodeMonitor:
    """The native SB3 VecEnv (on `ray_workers` Ray actors when > 0) with SB3's episode
    statistics (`EpisodeMonitor`), seeded like `stable_baselines3.common.env_util.make_vec_env`."""
    if ray_workers:
        envs = RayVecEnv(env_id, num_envs, ray_workers, ray_address, **env_kwargs)
    else:
        envs = NativeVecEnv(env_id, num_envs, **env_kwargs)
    envs.seed(seed)
    return EpisodeMonitor(envs)
