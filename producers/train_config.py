"""What one training run is: `TrainConfig` (validated before anything starts) and how its
episodes are shared among the workers."""
from __future__ import annotations

import dataclasses
import importlib.util

from gymnasium import spec as gym_spec

from producers.envs import ENV_IDS
from producers.rollout import episode_task
from producers.trainers import AGENTS, TRAINERS, TrainerOptions, agent_trainer_class
from stgym.bus import parse_bus_url
from stgym.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. `episodes` is the total over all workers (split evenly)."""

    algorithm: str = "cem"
    env_id: str = "SpinTorque-v1"
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    episodes: int = 512
    workers: int = 1
    first_worker: int = 0  # worker numbers first_worker.. (one run over several hosts or pods)
    experiment: str = "default"
    seed: int = 0
    bus_url: str = "memory"
    options: TrainerOptions = TrainerOptions()
    policy_out: str | None = None  # default: <run_dir>/policy.json
    run_dir: str | None = None  # default: <settings.run_dir>/train/<experiment>-<token>
    metrics_port: int | None = None
    log_format: str | None = None
    log_level: str | None = None
    mlflow: str | None = None  # tracking URI or "off"; None: settings, else auto (producers.tracking)
    ray_workers: int = 0  # > 0: one learner, its rollouts on this many Ray workers (ray_rollouts,
    # or RayVecEnv for ppo/sac)
    ray_address: str | None = None  # join this Ray cluster (None: a local instance)

    def validate(self) -> None:
        if self.algorithm not in TRAINERS and self.algorithm not in AGENTS:
            raise UserError(f"--algo {self.algorithm!r}: expected one of "
                            f"{', '.join([*TRAINERS, *AGENTS])}")
        if self.algorithm in AGENTS:
            agent_trainer_class()
        if self.env_id not in ENV_IDS:
            raise UserError(
                f"--env {self.env_id!r}: expected one of {', '.join(ENV_IDS)}"
            )
        if self.algorithm in AGENTS and gym_spec(self.env_id).vector_entry_point is None:
            raise UserError(
                f"--algo {self.algorithm} learns on a native vector env, which {self.env_id} "
                "does not have: train it with cem (or constant, random, reinforce), or an SB3 "
                "agent on DummyVecEnv in Python (docs/rl.md)")
        if self.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {self.episodes}")
        if not 1 <= self.workers <= 64:
            raise UserError(f"--workers must be in 1..64, got {self.workers}")
        if self.first_worker < 0:
            raise UserError(f"--first-worker must be >= 0, got {self.first_worker}")
        if self.ray_workers < 0 or (self.ray_address and not self.ray_workers):
            raise UserError(f"--ray-workers must be >= 1 with Ray, got {self.ray_workers}")
        if self.ray_workers and self.workers != 1:
            raise UserError("--ray-workers runs one learner (--workers 1) over Ray workers, "
                            f"not {self.workers}")
        if self.ray_workers and importlib.util.find_spec("ray") is None:
            raise UserError("--ray-workers needs Ray: pip install '.[rl]'")
        parse_bus_url(self.bus_url)
        if not 1 <= len(self.experiment) <= 64:
            raise UserError(f"--experiment must be 1..64 characters, got {self.experiment!r}")
        try:
            episode_task(self.env_id, self.env_kwargs)
        except (ValueError, TypeError) as error:
            raise UserError(f"--env {self.env_id} {self.env_kwargs}: {error}") from None


def worker_episodes(config: TrainConfig, index: int) -> int:
    share, extra = divmod(config.episodes, config.workers)
    return share + (index < extra)
