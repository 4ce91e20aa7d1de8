"""One learner, many workers: a trainer's batched rollouts as Ray tasks.

`RayRollouts(workers)` is a drop-in for `producers.rollout.rollout`: the episodes of one
trainer iteration (a CEM generation's whole population, with the previous iteration's
validation episodes) are dealt round-robin into `workers` shares — episode i to share i mod
K, so each share holds an equal part of every candidate's episodes and the shares take
equally long — each rolled out by a Ray task that holds one CPU (OpenMP on one thread: Ray
sets OMP_NUM_THREADS to a task's CPUs), and gathered back in order. The learner — the one
trainer — sees the same `EpisodeBatch` as with a local rollout, bit for bit: each episode depends only on its pulse, stop and seed. It publishes the
batch itself after the gather, so an episode reaches the bus exactly once, from the learner;
each episode event's `worker_id` names the learner and the Ray worker that ran it
(`w0.ray-<12 hex digits of the Ray worker id>`; the learner's training and experiment events
keep `w0`).

A task whose worker dies (its process killed, its node lost) is re-run by Ray
(`max_retries`); being a pure function of its share it gives the same episodes again, so a
lost worker costs time, never an episode or a duplicate. `address` joins a running cluster
(`services.sh up ray-head` on the services host, `services.sh up ray-worker` on the trainer
hosts: compose/bare/ray.sh; `stgym train --ray-address HOST:6379`), authenticated by the
cluster's token; without it a local Ray instance with `workers` CPUs is started.

`VectorCopiesActor` is the other kind of Ray worker: one of the K actors of
`producers.trainers.sb3_vecenv.RayVecEnv` (PPO/SAC's rollouts for one learner), holding its
slice of the vector env's copies.

Needs the `rl` extra (Ray).
"""
from __future__ import annotations

import os

import numpy as np

from producers.evaluation import concatenate, take
from producers.rollout import EpisodeBatch, rollout
from stgym import settings as settings_module

TASK_RETRIES = 5


def _share(task, pulses, seeds, stops) -> EpisodeBatch:
    """The share's episodes, each marked with the id of the Ray worker that ran it; without
    their actions (the pulses: the learner has them), which would double what goes back."""
    import ray

    batch = rollout(task, pulses, seeds, stops)
    batch.workers = np.full(len(batch), ray_worker_id(ray.get_runtime_context().get_worker_id()))
    batch.actions = batch.actions[:, :0]
    return batch


def ray_worker_id(worker_hex: str) -> str:
    """A Ray worker's short id on the events (`ray-` and the first 12 hex digits of its id)."""
    return f"ray-{worker_hex[:12]}"


def start_ray(workers: int, address: str | None = None) -> bool:
    """Join the cluster at `address` (with the cluster's token: stgym.settings ray_auth_env),
    or start a local Ray instance with `workers` CPUs, unless this process already has Ray. True
    when started here (the caller shuts it down).

    The workers run OpenMP on one thread: Ray sets OMP_NUM_THREADS to a task's or actor's CPUs
    (1) where the worker's environment has none, so a local instance is started without this
    process's OMP_NUM_THREADS (the runner sets it for its own process). No job runtime_env:
    Ray's prestarted workers have none, and one would have each worker started anew for it
    (2-3 s before the first task, measured)."""
    settings = settings_module.load()
    if address:  # before Ray is imported: it reads RAY_AUTH_* once per process
        os.environ.update(settings.ray_auth_env())
    # Joining: the node of this machine's address (ray.sh starts it on settings.host), not
    # whichever raylet Ray finds running here (the head's, when hosts share one kernel).
    node_ip = settings.host if address and settings.host != settings_module.LOOPBACK else None
    import ray

    if ray.is_initialized():
        return False
    threads = os.environ.pop("OMP_NUM_THREADS", None)  # the local raylet's, hence its workers'
    try:
        ray.init(
            address=address, num_cpus=None if address else workers, _node_ip_address=node_ip,
            include_dashboard=False, log_to_driver=False, configure_logging=False,
        )
    finally:
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = threads
    return True


class VectorCopiesActor:
    """One Ray worker's share of a `RayVecEnv`: its copies in one native vector env
    (`VectorCopies`, one integrator thread), stepped in one batched call per step."""

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict) -> None:
        from producers.trainers.vector_copies import VectorCopies

        self.copies = VectorCopies(env_id, num_envs, threads=1, **env_kwargs)

    def worker_id(self) -> str:
        import ray

        return ray_worker_id(ray.get_runtime_context().get_worker_id())

    def reset(self, seeds: list[int] | None) -> np.ndarray:
        return self.copies.reset(seeds)

    def step(self, actions: np.ndarray) -> tuple:
        return self.copies.step(actions)


class RayRollouts:
    """`rollout(task, pulses, seeds, stops)` over `workers` Ray tasks (one CPU each)."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        self._owned = start_ray(workers, address)  # started here: shut down by close()
        import ray

        self.ray, self.workers = ray, workers
        self._remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_share)
        self._task_ref = None
        self._task = None

    def __call__(self, task, pulses: np.ndarray, seeds: np.ndarray,
                 stops: np.ndarray | None = None) -> EpisodeBatch:
        if task is not self._task:  # the task goes to the object store once
            self._task, self._task_ref = task, self.ray.put(task)
        shares = [slice(k, None, self.workers) for k in range(min(self.workers, len(pulses)))]
        refs = [
            self._remote.remote(self._task_ref, pulses[rows], seeds[rows],
                                None if stops is None else stops[rows])
            for rows in shares
        ]
        gathered = concatenate(self.ray.get(refs))
        order = np.concatenate([np.arange(len(pulses))[rows] for rows in shares])
        batch = take(gathered, np.argsort(order))
        batch.actions = np.atleast_2d(np.asarray(pulses, dtype=float))  # rollout's actions
        return batch

    def close(self) -> None:
        if self._owned:
            self.ray.shutdown()
