"""Pulse policies and the batched rollout every trainer and `stgym evaluate` run episodes with.

A pulse policy is a piecewise-constant current pulse: `amplitudes[k]` (fraction of j_max, signed
relative to the write direction, so +1 always pushes toward the target) during control
interval k, the current off afterwards — and, with a `stop_alignment`, off as soon as the
observed m·target has reached it (write-and-verify feedback). As a gymnasium policy it reads
the step index from the observation's elapsed fraction and the write direction from its
target, so it drives the single env, the native vector env, or any Sync/AsyncVectorEnv of them.
On the array envs every device that has to flip gets the same pulse in its own write direction
(and its own feedback stop); a device already holding its target bit gets none.

`rollout` runs one episode per row of a pulse array with exactly the env's semantics (same
start states, integrator seeds, rewards and episode ends for the same episode seed: the
single-device envs' `SwitchingTask`, the array env's `ArrayTask`) and advances all
still-running episodes with one batched integrator call per control interval.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from producers.envs import ARRAY_ENV_IDS
from producers.envs.array import ArrayTask
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
    bits: np.ndarray | None = None  # bits each episode had to write (1 per single-device episode)
    # the Ray worker that ran each episode (producers.ray_rollouts); None: the learner itself
    workers: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self) else 0.0

    @property
    def energy_per_switch_j(self) -> float:
        """Mean Joule energy of the successful episodes (NaN if none succeeded)."""
        return float(self.energy_j[self.success].mean()) if self.success.any() else math.nan

    @property
    def energy_per_bit_j(self) -> float:
        """Joule energy of the successful episodes per bit they wrote (NaN if none wrote one)."""
        written = int(self.bits[self.success].sum()) if self.bits is not None else 0
        return float(self.energy_j[self.success].sum()) / written if written else math.nan


def episode_task(env_id: str, env_kwargs: dict | None = None) -> SwitchingTask | ArrayTask:
    """What `rollout` runs `env_id`'s episodes with: the array env's `ArrayTask`, a
    single-device env's `SwitchingTask` (ValueError for bad `env_kwargs`)."""
    import gymnasium as gym

    import producers  # noqa: F401  (registers the envs)

    env = gym.make(env_id, **(env_kwargs or {})).unwrapped
    return getattr(env, "array_task", env.task)


def device_type(task: SwitchingTask | ArrayTask) -> str:
    """The `device_type` of the episode events of `task`'s episodes."""
    return task.device_type if isinstance(task, ArrayTask) else task.params.device


class _OneDevice(ArrayTask):
    """A single-device env's episodes in `ArrayTask`'s terms: one device, which always has a bit
    to write (the target is the other pole), with the device task's own reward and episode end."""

    def starts(self, seeds):
        uniforms, step_seeds = self.device.episode_draws(
            [np.random.default_rng(int(seed)) for seed in seeds]
        )
        state = self.device.new_state(uniforms)
        return (state.m[:, None], state.target[:, None], np.ones((len(seeds), 1), dtype=bool),
                step_seeds[:, :, None])

    def advance(self, state, action, seeds, rows=None):
        reward, terminated, truncated = self.device.step(state, action, seeds, rows=rows)
        return reward[rows], terminated[rows], truncated[rows]


def rollout(task: SwitchingTask | ArrayTask, pulses: np.ndarray, seeds: np.ndarray,
            stop_alignment: np.ndarray | None = None) -> EpisodeBatch:
    """One episode per row of `pulses` (n, K), episode i seeded with `seeds[i]` like
    `env.reset(seed=seeds[i])`; intervals past K (and actions in the dead band) are off.
    `stop_alignment` (n,): feedback — a device whose m·target is at or above it when an interval
    starts gets no current in it (the write is done; the layer relaxes the rest of the way).

    `task`: a single-device env's `SwitchingTask`, or the array env's `ArrayTask` — then every
    device that has to flip gets the pulse in its own write direction (with its own feedback
    stop), a device already holding its target bit gets no current, and an episode's energy
    and integrator steps are its devices' sums (the array envs' episode semantics).
    """
    episodes = task if isinstance(task, ArrayTask) else _OneDevice(task, 1)
    devices = episodes.num_devices
    pulses = np.atleast_2d(np.asarray(pulses, dtype=float))
    n, segments = pulses.shape
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} pulses")
    stop = None if stop_alignment is None else np.asarray(stop_alignment, dtype=np.float32)
    m0, target, must_flip, step_seeds = episodes.starts(seeds)
    state = EpisodeState.start(m0.reshape(-1, 3), target.reshape(-1, 3))
    # per row: the write direction, or 0 for a device already holding its target bit
    drive = np.where(must_flip.ravel(), -state.target[:, 2], 0.0)
    device = np.arange(devices)
    total_reward = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    active = np.arange(n)
    started = time.perf_counter()
    while len(active):
        rows = (active[:, None] * devices + device).ravel()
        episode = np.repeat(active, devices)
        step = state.steps[rows]
        amplitude = np.where(
            step < segments, pulses[episode, np.minimum(step, segments - 1)], 0.0
        )
        if stop is not None:
            amplitude[aligned(state.m[rows], state.target[rows]) >= stop[episode]] = 0.0
        # float32 like the actions an agent hands the env, so both give the same bits
        action = (amplitude * drive[rows]).astype(np.float32).astype(float)
        seeds_now = step_seeds[episode, step, np.tile(device, len(active))]
        reward, terminated, truncated = episodes.advance(state, action, seeds_now, rows)
        total_reward[active] += reward
        success[active] = terminated
        active = active[~(terminated | truncated)]
    wall = time.perf_counter() - started
    sim_steps = episodes.total(state.sim_steps.reshape(n, devices))
    share = sim_steps / max(int(sim_steps.sum()), 1)
    return EpisodeBatch(
        seeds=np.asarray(seeds, dtype=np.int64), success=success,
        energy_j=episodes.total(state.energy_j.reshape(n, devices)),
        switching_time_s=episodes.switching_time(
            state.switching_time_s.reshape(n, devices), must_flip
        ),
        steps=state.steps[::devices], sim_steps=sim_steps, total_reward=total_reward,
        wall_time_s=wall * share, actions=pulses, bits=must_flip.sum(axis=1),
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
    # array env: which devices of each copy's episode to drive (set by its first observation)
    _must_flip: np.ndarray | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def __call__(self, observation: np.ndarray, max_steps: int) -> np.ndarray:
        """Actions for observations of a single-device env, (9,) or (n, 9), of a v1 env in the
        write frame, (7,) or (n, 7), or of an array env, (5N + 2,) or (n, 5N + 2). On the
        array, the devices to drive are those whose m is on the other side of their target in
        the episode's first observation (elapsed 0): the policy remembers them until the next
        episode's first observation. A v1 action is the current toward the target, 2·A − 1
        for amplitude A: a negative amplitude (against the target) is off there, and so is a
        device of the array that holds its bit (−1)."""
        obs = np.atleast_2d(observation)
        # lab frame: the target's z and the current's sign that writes it; v1: +z and +1
        if self.env_id not in ARRAY_ENV_IDS:
            m_z, elapsed = obs[:, 2:3], obs[:, 5 if self.write_frame else OBS_ELAPSED]
            target_z = 1.0 if self.write_frame else obs[:, OBS_TARGET][:, 2:]
            drive = 1.0 if self.write_frame else -target_z
        else:
            devices = (obs.shape[1] - 2) // 5
            m_z, elapsed = obs[:, 2 : 3 * devices : 3], obs[:, 5 * devices]
            target_z = 1.0 if self.write_frame else obs[:, 3 * devices : 4 * devices]
            must_flip = m_z * target_z < 0
            if self._must_flip is None or self._must_flip.shape != must_flip.shape:
                self._must_flip = must_flip
            first = elapsed == 0
            self._must_flip[first] = must_flip[first]
            drive = np.where(self._must_flip, 1.0 if self.write_frame else -target_z, 0.0)
        current = self._amplitude(elapsed, m_z, target_z, max_steps) * drive
        if self.write_frame:
            current = 2.0 * np.maximum(current, 0.0) - 1.0
        action = current.astype(np.float32)
        return action[0] if np.ndim(observation) == 1 else action

    @functools.cached_property
    def write_frame(self) -> bool:
        """Whether the policy's env observes and acts in the write frame (the v1 envs)."""
        from gymnasium.envs.registration import registry

        import producers  # noqa: F401  (registers the envs)

        spec = registry.get(self.env_id)
        return bool({**(spec.kwargs if spec else {}), **self.env_kwargs}.get("write_frame"))

    def _amplitude(self, elapsed, m_z, target_z, max_steps: int) -> np.ndarray:
        """The pulse's amplitude (n, 1) at each observation's step, 0 past the pulse or, with
        feedback, once m·target reached `stop_alignment`."""
        step = np.rint(elapsed * max_steps).astype(int)
        k = len(self.amplitudes)
        amplitude = np.where(step < k, self.amplitudes[np.minimum(step, k - 1)], 0.0)[:, None]
        if self.stop_alignment is not None:
            amplitude = np.where(m_z * target_z >= np.float32(self.stop_alignment), 0.0, amplitude)
        return amplitude

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
