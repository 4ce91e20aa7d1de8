"""`ppo` and `sac`: stable-baselines3 agents as trainers of `stgym train`.

The agent learns on `NativeVecEnv` (all copies in one batched integrator call), or with
`ray_workers` K on `RayVecEnv` (the copies on K Ray actors, one learner), with the
hyperparameters of `hyperparams.yml`. `PublishingCallback` turns every episode the agent
completes into the same EpisodeEvents as the pulse trainers' (through the worker's
`EpisodePublisher`: batches of at most `batch_size` episodes, each flushed and then ledgered),
and reports a TrainingEvent after each batch (objective: mean episode return; model accuracy:
the batch's success rate). The episode budget is exact: training stops once it is spent, and
the model is saved as an SB3 zip (`stable_baselines3.PPO.load(path)`).

Needs the `rl` extra (`pip install '.[rl]'`); the runner imports this module only for
`--algo ppo|sac` and turns a missing extra into a one-line hint (`INSTALL_HINT`).
"""
from __future__ import annotations

import functools
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import stable_baselines3
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from producers.rollout import EpisodeBatch
from producers.trainers.base import Progress, Reporter, TrainerOptions
from producers.trainers.sb3_vecenv import make_vec_env

AGENTS = {"ppo": stable_baselines3.PPO, "sac": stable_baselines3.SAC}
MODEL_FORMAT = "stgym.sb3-model.v1"
HYPERPARAMS = Path(__file__).with_name("hyperparams.yml")


@functools.cache
def _table() -> dict:
    return yaml.safe_load(HYPERPARAMS.read_text())


def hyperparameters(algorithm: str, env_id: str) -> dict:
    """The shipped hyperparameters of `algorithm` on `env_id` (its own entry, else `default`)."""
    entries = _table()[algorithm]
    return dict(entries.get(env_id, entries["default"]))


class AgentTrainer:
    """One worker's SB3 agent: `run(episodes, reporter)` trains it on exactly `episodes`
    episodes of `env_id`, publishing them, and saves the model to `model_path`."""

    def __init__(self, algorithm: str, env_id: str, env_kwargs: dict, options: TrainerOptions,
                 rng: np.random.Generator, model_path: Path, ray_workers: int = 0,
                 ray_address: str | None = None) -> None:
        # the agents' networks are small: more torch threads only contend (with the
        # integrator's, and each other's on a shared machine) — 4x slower PPO under load
        torch.set_num_threads(1)
        params = hyperparameters(algorithm, env_id)
        self.name, self.model_path = algorithm, Path(model_path)
        self.options = options
        self.seed = int(rng.integers(0, 2**31 - 1 - params["n_envs"]))
        self.envs = make_vec_env(env_id, params.pop("n_envs"), seed=self.seed,
                                 ray_workers=ray_workers, ray_address=ray_address, **env_kwargs)
        self.model = AGENTS[algorithm](
            params.pop("policy"), self.envs, seed=self.seed, device="cpu", verbose=0, **params
        )
        # saved in the zip's data (SB3 saves the model's attributes): what `stgym evaluate`
        # needs to rebuild the agent and its env
        self.model.stgym_model = {"format": MODEL_FORMAT, "algorithm": algorithm,
                                  "env_id": env_id, "env_kwargs": dict(env_kwargs)}
        self.callback: PublishingCallback | None = None

    def run(self, episodes: int, reporter: Reporter) -> None:
        self.callback = PublishingCallback(reporter, episodes, self.options.batch_size,
                                           self.seed)
        # every episode ends within max_steps steps: this many steps always spend the budget
        # (each copy may be inside an unfinished episode when it is spent)
        steps = (episodes + self.envs.num_envs) * self.envs.venv.task.max_steps
        self.model.learn(steps, callback=self.callback)
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(self.model_path)

    def best_stop(self) -> None:
        return None

    def close(self) -> None:
        """Close the envs (a RayVecEnv's actors, and Ray if it started it)."""
        self.envs.close()

    def summary(self) -> dict:
        return {"model_path": str(self.model_path), "env_steps": int(self.model.num_timesteps)}


class PublishingCallback(BaseCallback):
    """Completed episodes -> `reporter.episodes(batch)` every `batch_size` episodes, then
    a TrainingEvent; stops the agent once `budget` episodes are published. An episode's
    `seed` is its copy's seed (copy i of the vector env draws from seed + i, unless its info
    says otherwise), its wall time its share of the batched steps' wall time; on a RayVecEnv
    it names the Ray worker that ran it, and a lost worker's unfinished episodes
    (`worker_lost`) are not published — nor counted by SB3 (`EpisodeMonitor`; SAC's episode
    counter is taken back here)."""

    def __init__(self, reporter: Reporter, budget: int, batch_size: int, seed: int):
        super().__init__()
        self.reporter, self.budget, self.batch_size, self.seed = (
            reporter, budget, batch_size, seed)
        self.published = 0
        self.iterations = 0
        self._rows: list[tuple] = []
        self._wall: np.ndarray | None = None
        self._last = 0.0

    def _on_training_start(self) -> None:
        self._wall = np.zeros(self.training_env.num_envs)
        self._last = time.perf_counter()

    def _on_step(self) -> bool:
        now = time.perf_counter()
        self._wall += (now - self._last) / len(self._wall)
        self._last = now
        for i in np.flatnonzero(self.locals["dones"]):
            info = self.locals["infos"][i]
            if info.get("worker_lost"):
                self._wall[i] = 0.0
                if isinstance(self.model, OffPolicyAlgorithm):  # it counts each done after us
                    self.model._episode_num -= 1  # as an episode (logged time/episodes)
                continue
            switch = info["switching_time_s"]
            self._rows.append((
                info.get("seed", self.seed + i), info["success"], info["energy_j"],
                math.nan if switch is None else switch, info["episode"]["l"],
                info["sim_steps"], info["episode"]["r"], self._wall[i], info.get("worker"),
            ))
            self._wall[i] = 0.0
            if self.published + len(self._rows) == self.budget:
                break
        if len(self._rows) >= self.batch_size or self.published + len(self._rows) >= self.budget:
            self._publish()
        return self.published < self.budget

    def _on_training_end(self) -> None:
        if self._rows:
            self._publish()

    def _publish(self) -> None:
        rows, self._rows = self._rows, []
        columns = list(zip(*rows))
        batch = EpisodeBatch(
            seeds=np.array(columns[0], dtype=np.int64),
            success=np.array(columns[1], dtype=bool),
            energy_j=np.array(columns[2], dtype=float),
            switching_time_s=np.array(columns[3], dtype=float),
            steps=np.array(columns[4], dtype=np.int64),
            sim_steps=np.array(columns[5], dtype=np.int64),
            total_reward=np.array(columns[6], dtype=float),
            wall_time_s=np.array(columns[7], dtype=float),
            actions=np.zeros((len(rows), 0)), bits=np.ones(len(rows), dtype=np.int64),
            workers=None if columns[8][0] is None else np.array(columns[8]),
        )
        self.reporter.episodes(batch)
        self.published += len(batch)
        self.iterations += 1
        model = self.model
        self.reporter.iteration(Progress(
            iteration=self.iterations, objective=float(batch.total_reward.mean()),
            learning_rate=float(model.lr_schedule(model._current_progress_remaining)),
            model_accuracy=batch.success_rate,
        ))


def load_agent(path: str | Path):
    """The SB3 model saved by `stgym train --algo ppo|sac` at `path` and its metadata
    (algorithm, env id and kwargs); UserError for a file that is not one."""
    from stable_baselines3.common.save_util import load_from_zip_file

    from stgym.errors import UserError

    try:
        data, _, _ = load_from_zip_file(path, device="cpu")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"model file {path}: cannot read it as an SB3 model zip "
                        f"({error})") from None
    meta = (data or {}).get("stgym_model")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise UserError(f"model file {path}: not saved by stgym train --algo ppo|sac (no "
                        f"{MODEL_FORMAT!r} metadata in its data)")
    return AGENTS[meta["algorithm"]].load(path, device="cpu"), meta


class DeterministicActor(torch.nn.Module):
    """An SB3 policy network as one torch module: observations (n, obs dim) float32 -> the
    actions `model.predict(obs, deterministic=True)` gives (squashed ones unscaled, others
    clipped to the action box)."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy.eval()
        self.register_buffer("low", torch.as_tensor(policy.action_space.low))
        self.register_buffer("high", torch.as_tensor(policy.action_space.high))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        actions = self.policy._predict(observations, deterministic=True)
        if self.policy.squash_output:
            return self.low + 0.5 * (actions + 1.0) * (self.high - self.low)
        return torch.clamp(actions, self.low, self.high)


def save_torch_model(model_path: str, path: str) -> None:
    """Write the mlflow.pytorch model of the SB3 model at `model_path` (its policy network as
    a `DeterministicActor`, with a signature) to the directory `path`:
    `mlflow.pytorch.load_model(uri)(obs)` or `mlflow.pyfunc.load_model(uri).predict(obs)`."""
    import gymnasium as gym
    import mlflow
    import mlflow.pytorch

    from producers.policy_model import signature

    model, meta = load_agent(model_path)
    env = gym.make(meta["env_id"], **meta["env_kwargs"])
    example = np.stack([env.reset(seed=seed)[0] for seed in range(2)])
    env.close()
    mlflow.pytorch.save_model(
        # pt2: a traced graph (torch.export), loaded without unpickling code; traced on the
        # example, the batch size stays free
        DeterministicActor(model.policy), path, serialization_format="pt2",
        input_example=example,
        signature=signature(meta["env_id"], meta["env_kwargs"], output_param=False),
        # explicit: inferring them would load the model in a subprocess (seconds)
        pip_requirements=["spin-torque-gym", f"mlflow-skinny=={mlflow.__version__}",
                          f"torch=={torch.__version__}",
                          f"stable-baselines3=={stable_baselines3.__version__}"],
        metadata={"env_id": meta["env_id"], "algorithm": meta["algorithm"]},
    )


def evaluate_model_file(path: str | Path, episodes: int, temperature: float | None = None,
                        seed: int = 12345) -> dict:
    """`stgym evaluate MODEL.zip`: the agent's deterministic policy on the evaluation episodes
    of `seed` (the same as a pulse policy's), the same statistics as `evaluate_policy`."""
    from producers.evaluation import describe
    from producers.rollout import episode_task

    model, meta = load_agent(path)
    kwargs = dict(meta["env_kwargs"])
    if temperature is not None:
        kwargs["temperature"] = temperature
    started = time.perf_counter()
    batch = evaluate_agent(model, meta["env_id"], episodes, seed, kwargs)
    wall = time.perf_counter() - started
    return describe(batch, episode_task(meta["env_id"], kwargs), wall) | {
        "algorithm": meta["algorithm"], "env_id": meta["env_id"]}


def evaluate_agent(model, env_id: str, episodes: int, seed: int,
                   env_kwargs: dict | None = None) -> EpisodeBatch:
    """`episodes` episodes of the agent's deterministic policy on the evaluation seeds of
    `producers.evaluation.seed_chunks` — the very episodes `stgym evaluate` scores a pulse
    policy on — one native vector env copy per episode."""
    import gymnasium as gym

    from producers.evaluation import concatenate, seed_chunks

    batches = []
    for seeds in seed_chunks(episodes, seed):
        n = len(seeds)
        envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                            **(env_kwargs or {}))
        obs, _ = envs.reset(seed=[int(s) for s in seeds])
        started = time.perf_counter()
        live = np.ones(n, dtype=bool)
        success, energy, switching = np.zeros(n, bool), np.zeros(n), np.full(n, math.nan)
        steps, sim_steps, total = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n)
        while live.any():
            actions, _ = model.predict(obs, deterministic=True)
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            total[live] += rewards[live]
            steps[live] += 1
            ended = live & (terminated | truncated)
            if ended.any():
                success[ended] = terminated[ended]
                energy[ended] = infos["energy_j"][ended]
                switching[ended] = infos["switching_time_s"][ended]
                sim_steps[ended] = infos["sim_steps"][ended]
                live &= ~ended
        wall = np.full(n, (time.perf_counter() - started) / n)
        batches.append(EpisodeBatch(
            seeds=np.asarray(seeds), success=success, energy_j=energy, switching_time_s=switching,
            steps=steps, sim_steps=sim_steps, total_reward=total, wall_time_s=wall,
            actions=np.zeros((n, 0)), bits=np.ones(n, dtype=np.int64),
        ))
    return concatenate(batches)
