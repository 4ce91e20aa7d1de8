"""Pulse policies and the batched rollout every trainer and `stgym evaluate` run episodes with.

A pulse policy is a piecewise-constant current pulse: `amplitudes[k]` (fraction of j_max, signed
relative to the write direction, so +1 always pushes toward the target) during control
interval k, the current off afterwards — and, with a `stop_alignment`, off as soon as the
observed m·target has reached it (write-and-verify feedback). As a gymnasium policy it reads the step index from the
observation's elapsed fraction and the write direction from its target, so it drives the
single env, the native vector env, or any Sync/AsyncVectorEnv of them.

`rollout` runs one episode per row of a pulse array with exactly the single env's semantics
(same start states, integrator seeds, rewards and episode ends for the same episode seed) and
advances all still-running episodes with one batched integrator call per control interval.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from producers.envs.task import OBS_ELAPSED, OBS_TARGET, EpisodeState, SwitchingTask
from stgym.errors import UserError

POLICY_FORMAT = "stgym.pulse-policy.v1"


@dataclasses.dataclass
class EpisodeBatch:
    """Outcomes of a batch of episodes, one entry per episode (SI units)."""

    seeds: np.ndarray
    success: np.ndarray
    energy_j: np.ndarray
    switching_time_s: np.ndarray  # NaN where m never crossed toward the target
    steps: np.ndarray
    sim_steps: np.ndarray
    total_reward: np.ndarray
    wall_time_s: np.ndarray
    actions: np.ndarray  # (n, K) the amplitudes applied (relative to the write direction)

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self) else 0.0

    @property
    def energy_per_switch_j(self) -> float:
        """Mean Joule energy of the successful episodes (NaN if none succeeded)."""
        return float(self.energy_j[self.success].mean()) if self.success.any() else math.nan


def rollout(task: SwitchingTask, pulses: np.ndarray, seeds: np.ndarray,
            stop_alignment: np.ndarray | None = None) -> EpisodeBatch:
    """One episode per row of `pulses` (n, K), episode i seeded with `seeds[i]` like
    `env.reset(seed=seeds[i])`; intervals past K (and actions in the dead band) are off.
    `stop_alignment` (n,): feedback — an interval that starts with m·target at or above it is
    off (the write is done; the layer relaxes the rest of the way by itself)."""
    pulses = np.atleast_2d(np.asarray(pulses, dtype=float))
    n, segments = pulses.shape
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} pulses")
    stop = None if stop_alignment is None else np.asarray(stop_alignment, dtype=np.float32)
    rngs = [np.random.default_rng(int(seed)) for seed in seeds]
    starts = [task.initial_states(rng, 1) for rng in rngs]
    step_seeds = np.array([task.step_seeds(rng) for rng in rngs])
    state = EpisodeState.start(
        np.concatenate([m for m, _ in starts]), np.concatenate([t for _, t in starts])
    )
    write_sign = -state.target[:, 2]
    total_reward = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    active = np.arange(n)
    started = time.perf_counter()
    while len(active):
        step = state.steps[active]
        amplitude = np.where(
            step < segments, pulses[active, np.minimum(step, segments - 1)], 0.0
        )
        if stop is not None:
            amplitude[aligned(state.m[active], state.target[active]) >= stop[active]] = 0.0
        # float32 like the actions an agent hands the env, so both give the same bits
        action = (amplitude * write_sign[active]).astype(np.float32).astype(float)
        seeds_now = step_seeds[active, step]
        reward, terminated, truncated = task.step(state, action, seeds_now, rows=active)
        total_reward[active] += reward
        success[active] = terminated
        active = active[~(terminated | truncated)]
    wall = time.perf_counter() - started
    share = state.sim_steps / max(int(state.sim_steps.sum()), 1)
    return EpisodeBatch(
        seeds=np.asarray(seeds, dtype=np.int64), success=success, energy_j=state.energy_j,
        switching_time_s=state.switching_time_s, steps=state.steps, sim_steps=state.sim_steps,
        total_reward=total_reward, wall_time_s=wall * share, actions=pulses,
    )


def aligned(m: np.ndarray, target: np.ndarray) -> np.ndarray:
    """m·target as the policy sees it in a float32 observation (targets are ±z)."""
    return m[:, 2].astype(np.float32) * target[:, 2].astype(np.float32)


@dataclasses.dataclass
class PulsePolicy:
    """A trained pulse with where it came from; saved as JSON (`save`/`load`)."""

    amplitudes: np.ndarray
    env_id: str
    env_kwargs: dict
    algorithm: str
    metrics: dict = dataclasses.field(default_factory=dict)
    stop_alignment: float | None = None  # feedback: current off once m·target reaches it

    def __call__(self, observation: np.ndarray, max_steps: int) -> np.ndarray:
        """Actions for observations (9,) or (n, 9) of a single-device env."""
        obs = np.atleast_2d(observation)
        step = np.rint(obs[:, OBS_ELAPSED] * max_steps).astype(int)
        k = len(self.amplitudes)
        amplitude = np.where(step < k, self.amplitudes[np.minimum(step, k - 1)], 0.0)
        if self.stop_alignment is not None:
            done = obs[:, 2] * obs[:, 5] >= np.float32(self.stop_alignment)
            amplitude = np.where(done, 0.0, amplitude)
        action = (amplitude * -obs[:, OBS_TARGET][:, 2]).astype(np.float32)[:, None]
        return action[0] if np.ndim(observation) == 1 else action

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({
            "format": POLICY_FORMAT,
            "algorithm": self.algorithm,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "amplitudes": [float(a) for a in self.amplitudes],
            "stop_alignment": self.stop_alignment,
            "metrics": self.metrics,
        }, indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PulsePolicy:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"policy file {path}: cannot read it as JSON ({error})") from None
        if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
            raise UserError(f"policy file {path}: expected format {POLICY_FORMAT!r}")
        return cls(
            amplitudes=np.asarray(data["amplitudes"], dtype=float), env_id=data["env_id"],
            env_kwargs=data["env_kwargs"], algorithm=data["algorithm"],
            metrics=data.get("metrics", {}), stop_alignment=data.get("stop_alignment"),
        )
