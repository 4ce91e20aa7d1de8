"""`SpinTorqueArray-v0` / `-v1`: write a bit pattern into a row of N MTJs, one current per device."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import physics_ext as px
from producers.envs import frame, render
from producers.envs.task import EpisodeState, SwitchingTask


@dataclasses.dataclass(frozen=True)
class ArrayTask:
    """The array envs' episode semantics over one device's `SwitchingTask`: start states,
    step seeds, coupling, reward and episode end of whole episodes of N devices. The env steps
    one episode with it, `producers.rollout.rollout` many at once (E episodes are E·N rows of an
    `EpisodeState`, device i of episode e in row e·N + i), so both give the same bits.

    The scales trainers and evaluation read (`energy_budget_j`, `control_interval`,
    `temperature`, `max_steps`, `params`) are per episode: the energy budget of all N devices.
    """

    device: SwitchingTask
    num_devices: int
    dipolar_coupling: bool = False
    pitch: float = 1e-7

    @property
    def params(self) -> px.DeviceParams:
        return self.device.params

    @property
    def device_type(self) -> str:
        """The `device_type` of this array's episode events, e.g. "stt-pma-array4" (an episode
        writes up to N bits: its energy is not comparable with one device's)."""
        return f"{self.device.params.device}-array{self.num_devices}"

    @property
    def energy_budget_j(self) -> float:
        return self.num_devices * self.device.energy_budget_j

    @property
    def control_interval(self) -> float:
        return self.device.control_interval

    @property
    def temperature(self) -> float:
        return self.device.temperature

    @property
    def max_steps(self) -> int:
        return self.device.max_steps

    def start(self, rng: np.random.Generator, pattern: np.ndarray | None = None):
        """One episode's draws from its generator: start states m0 (N, 3), targets (N, 3) (the
        pattern, random unless given), `must_flip` (N,) (m0 on the other side of its target:
        what a policy sees in the first observation) and the integrator seeds of every control
        interval (max_steps, N)."""
        n = self.num_devices
        m0, _ = self.device.initial_states(rng, n)
        if pattern is None:
            pattern = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        target = np.zeros((n, 3))
        target[:, 2] = pattern
        must_flip = m0[:, 2] * pattern < 0
        # 63 random bits each, straight from the bit generator (as SwitchingTask.step_seeds)
        seeds = rng.bit_generator.random_raw(self.device.max_steps * n) >> np.uint64(1)
        return m0, target, must_flip, seeds.reshape(self.device.max_steps, n)

    def starts(self, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`start` of one episode per seed, each from `np.random.default_rng(seed)` as
        `env.reset(seed=seed)` draws, stacked: m0 (E, N, 3), targets (E, N, 3), must_flip
        (E, N), integrator seeds (E, max_steps, N)."""
        starts = [self.start(np.random.default_rng(int(seed))) for seed in seeds]
        return tuple(np.stack([start[i] for start in starts]) for i in range(4))

    def advance(self, state: EpisodeState, action: np.ndarray, seeds: np.ndarray,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply `action` (one per row) with integrator `seeds` (one per row) for one control
        interval to the episodes made of `rows` (whole episodes, N consecutive rows each; None:
        every row of `state`), all devices in one batched integrator call. Returns
        (reward, terminated, truncated) of those episodes, in order."""
        n, task = self.num_devices, self.device
        if rows is None:
            rows = np.arange(len(state.m), dtype=np.intp)
        field = self.stray_field(state.m) if self.dipolar_coupling else None
        before = self.total(state.energy_j[rows].reshape(-1, n))
        _, device_done, _ = task.step(state, action, seeds, rows=rows, field=field)
        after = self.total(state.energy_j[rows].reshape(-1, n))
        terminated = device_done[rows].reshape(-1, n).all(axis=1)
        elapsed = state.elapsed_s[rows[::n]]
        truncated = ~terminated & (elapsed >= task.time_budget * (1 - 1e-9))
        reward = (
            task.success_bonus * terminated
            - task.energy_weight * (after - before) / self.energy_budget_j
            - task.time_weight * task.control_interval / task.time_budget
        )
        return reward, terminated, truncated

    def stray_field(self, m: np.ndarray) -> np.ndarray:
        """The point-dipole field (A/m) of each device's two neighbours in its row, per row of
        m (E·N, 3), from their m at the interval's start."""
        base = self.device.params
        prefactor = base.ms * base.volume / (4 * math.pi * self.pitch**3)  # A m^2 per unit m
        m = m.reshape(-1, self.num_devices, 3)
        # Neighbours along x: H = prefactor (3 (m·x) x − m) for r = pitch along the row.
        neighbour_field = prefactor * (3 * m[..., 0:1] * np.array([1.0, 0.0, 0.0]) - m)
        stray = np.zeros_like(m)
        stray[:, 1:] += neighbour_field[:, :-1]
        stray[:, :-1] += neighbour_field[:, 1:]
        return stray.reshape(-1, 3)

    @staticmethod
    def total(values: np.ndarray) -> np.ndarray:
        """Per-episode sums (E,) of per-device values (E, N), added in device order (the env
        and the rollout add the same way, so their energies agree to the bit)."""
        total = values[:, 0].copy()
        for i in range(1, values.shape[1]):
            total += values[:, i]
        return total

    @staticmethod
    def switching_time(switching_s: np.ndarray, must_flip: np.ndarray) -> np.ndarray:
        """Per episode (E,): when the last device that had to flip first crossed (s), NaN until
        all of them have, and NaN when none had to (nothing was switched)."""
        latest = np.where(must_flip, switching_s, -np.inf).max(axis=1)
        return np.where(latest > -np.inf, latest, np.nan)


class SpinTorqueArrayEnv(gym.Env):
    """Write an N-bit pattern into a row of N STT perpendicular MTJs.

    ## Description

    N devices sit in a row along x at `pitch` (m) apart. Each stores a bit along ±z; an episode
    asks for a target pattern (random, or `options={"pattern": [±1, ...]}` at reset; +1 is +z).
    Each step applies one current density per device for one control interval; all devices
    advance in one batched integrator call. With `dipolar_coupling=True` each device also
    feels the point-dipole stray field of its two neighbours, computed from their state at the
    start of the step and held for the interval (operator splitting: the interval is short
    against the field's change).

    ## Action Space

    `Box(-1.0, 1.0, (N,), float32)`: device i's current density as a fraction of `j_max`
    (positive drives m from +z toward −z); |a_i| ≤ `action_deadband` switches device i off.

    v1 (`write_frame=True`): each device in its own write frame (as `SpinTorque-v1`): a_i is
    the current (a_i + 1)/2 · j_max toward device i's target bit, off where that is at most
    `action_deadband` of j_max (a_i ≤ −0.96 by default). For a device already holding its
    bit that current holds it there (it only costs energy), so one action means "write" for
    every device, whichever pattern is asked.

    ## Observation Space

    `Box(low, high, (5N + 2,), float32)`:

    | Num            | Observation                          | Min | Max | Unit                   |
    |----------------|--------------------------------------|-----|-----|------------------------|
    | 3i .. 3i+2     | m_x, m_y, m_z of device i            | -1  | 1   | 1 (unit vector)        |
    | 3N + i         | target bit of device i (±1, as m_z)  | -1  | 1   | 1                      |
    | 4N + i         | last action of device i              | -1  | 1   | fraction of `j_max`    |
    | 5N             | elapsed fraction of the time budget  | 0   | 1   | 1                      |
    | 5N + 1         | energy used so far, all devices      | 0   | 1   | N · E_budget           |

    v1 (`write_frame=True`): the same layout with each device in its write frame
    (`producers/envs/frame.py`): 3i .. 3i+2 are m_x, m_y · t_i, m_z · t_i (3i+2 is
    m_i·target_i, negative for a device that still has to flip), 3N + i the write direction
    t_i (±1), 4N + i the last current toward the target (0 .. 1, fraction of `j_max`).

    ## Rewards

    Per step: `success_bonus` when the episode ends in success, minus
    `energy_weight · ΔE / (N · E_budget)` (ΔE: the Joule energy of all devices in the step, J;
    E_budget as in `SpinTorque-v0`), minus `time_weight · control_interval / time_budget`.

    ## Starting State

    Each device stores a random bit, tilted by a thermal polar angle as in `SpinTorque-v0`.
    Devices whose stored bit already equals their target only need to stay put (no current:
    the trainers' pulse policies drive only the devices that start on the other side of their
    target, each in its own write direction). The integrator seeds of every step are drawn at
    reset, after the start states and the pattern (as in `SpinTorque-v0`).

    ## Episode End

    - Termination (success): every device had its current off during the step and ends it
      with m_i·target_i ≥ `success_threshold`.
    - Truncation: the time budget is spent without success; stepping on raises RuntimeError
      (call reset()).

    `info`: `energy_j` (J, all devices, episode so far), `switching_time_s` (s, when the last
    device that had to flip first crossed; None until all have, and None when none had to),
    `success`, `sim_steps` (integrator steps, all devices), `bit_errors` (devices not at their
    target bit now).

    ## Arguments

    | Parameter           | Type          | Default   | Description                               |
    |---------------------|---------------|-----------|-------------------------------------------|
    | `num_devices`       | int           | 4         | N                                         |
    | `dipolar_coupling`  | bool          | False     | stray fields of nearest neighbours        |
    | `pitch`             | float         | 1e-7      | m between device centres                  |
    | `device_params`     | dict or None  | None      | overrides for `physics_ext.make_params`   |
    | `j_max`             | float or None | None      | A/m^2 at action 1; None: 5·jc0            |
    | `control_interval`  | float         | 1e-10     | s per step                                |
    | `time_budget`       | float         | 1e-08     | s per episode                             |
    | `dt`                | float         | 1e-12     | integrator time step, s                   |
    | `method`            | str           | "heun"    | integrator                                |
    | `temperature`       | float         | 300.0     | K                                         |
    | `success_threshold` | float         | 0.9       | m·target needed per device                |
    | `action_deadband`   | float         | 0.02      | |a| at or below which a current is off    |
    | `write_frame`       | bool          | False     | v1 action and observation (True in -v1)   |
    | `success_bonus`, `energy_weight`, `time_weight` | float | 1.0, 1.0, 0.1 | reward weights   |
    | `render_mode`       | str or None   | None      | "rgb_array"                               |

    ## Vectorized environment

    No native vector env: use `gymnasium.vector.SyncVectorEnv` (each copy already batches
    its N devices into one integrator call). `ArrayTask` holds the episode semantics; the
    trainers' `producers.rollout.rollout` runs many episodes of it per integrator call, with
    the same results as this env for the same seeds and actions.

    ## Version History

    - v0: initial version.
    - v1: `write_frame=True` and `energy_weight=3.0`, as `SpinTorque-v1` (the physics,
      coupling and episode ends unchanged; reproduce with
      `gym.make("SpinTorqueArray-v0", write_frame=True, energy_weight=3.0)`). In v0 the sign
      that writes a device is its target's, so one action pattern writes one bit pattern
      only (a rule that ignores the targets wrote 6.2 % of v0's 4-bit patterns, 100 % of
      v1's; current toward a bit a device holds keeps it there, 0 of 783 lost), and a
      Gaussian policy around 0 wrote 0 % of v0's patterns, 2.8 % of v1's. SB3 PPO (through
      DummyVecEnv, 16 copies): 0 % on v0 after 328k steps, 99.7 % on v1 from 573k
      (docs/rl.md).

    ## Example

    >>> import gymnasium as gym, numpy as np, producers
    >>> env = gym.make("SpinTorqueArray-v0", num_devices=3, temperature=0.0)
    >>> obs, info = env.reset(seed=0, options={"pattern": [-1, -1, -1]})
    >>> obs.shape
    (17,)
    >>> for _ in range(40):
    ...     obs, reward, terminated, truncated, info = env.step(np.ones(3, np.float32))
    >>> obs, reward, terminated, truncated, info = env.step(np.zeros(3, np.float32))
    >>> terminated, info["bit_errors"]
    (True, 0)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        num_devices: int = 4,
        dipolar_coupling: bool = False,
        pitch: float = 1e-7,
        device_params: dict | None = None,
        j_max: float | None = None,
        control_interval: float = 1e-10,
        time_budget: float = 1e-8,
        dt: float = 1e-12,
        method: str = "heun",
        temperature: float = 300.0,
        success_threshold: float = 0.9,
        action_deadband: float = 0.02,
        success_bonus: float = 1.0,
        energy_weight: float = 1.0,
        time_weight: float = 0.1,
        write_frame: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if num_devices < 1:
            raise ValueError(f"num_devices must be >= 1, got {num_devices}")
        if not pitch > 0:
            raise ValueError(f"pitch must be > 0 m, got {pitch!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        task = SwitchingTask.create(
            "stt-pma", device_params, j_max, 5.0, control_interval, time_budget, dt, method,
            temperature, success_threshold, action_deadband, success_bonus, energy_weight,
            time_weight, "random",
        )
        if dipolar_coupling and pitch <= task.params.diameter:
            raise ValueError(
                f"pitch ({pitch} m) must exceed the device diameter ({task.params.diameter} m)"
            )
        self.task = task  # one device's physics
        self.array_task = ArrayTask(task, num_devices, dipolar_coupling, pitch)
        self.num_devices = num_devices
        self.dipolar_coupling = dipolar_coupling
        self.pitch = pitch
        self.write_frame = write_frame
        self.render_mode = render_mode
        n = num_devices
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        # the last action: a signed fraction of j_max (v0), a current toward the target (v1)
        low = np.concatenate([-np.ones(4 * n), np.full(n, 0.0 if write_frame else -1.0),
                              [0.0, 0.0]]).astype(np.float32)
        high = np.ones(5 * n + 2, dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.state: EpisodeState | None = None
        self._history: list = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        n = self.num_devices
        pattern = None
        if options and "pattern" in options:
            pattern = np.asarray(options["pattern"], dtype=float)
            if pattern.shape != (n,) or not np.all(np.abs(pattern) == 1):
                raise ValueError(f"options['pattern'] must be {n} values of ±1, got {pattern!r}")
        m0, target, self._must_flip, self._step_seeds = self.array_task.start(self.np_random, pattern)
        self.state = EpisodeState.start(m0, target)
        self._history = [(0.0, m0.copy(), np.zeros(n))]
        return self._observe(), self._info(False)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        step = self.state.steps.item(0)
        if step >= len(self._step_seeds):
            raise RuntimeError("the episode is over (time budget spent); call reset()")
        action = np.asarray(action, dtype=float).reshape(self.num_devices)
        if self.write_frame:
            action = frame.lab_actions(action, self.state.target[:, 2], self.task.action_deadband)
        reward, terminated, truncated = self.array_task.advance(
            self.state, action, self._step_seeds[step]
        )
        if self.render_mode is not None:
            self._history.append((float(self.state.elapsed_s[0]), self.state.m.copy(),
                                  action.copy()))
        terminated = bool(terminated[0])
        return (self._observe(), float(reward[0]), terminated, bool(truncated[0]),
                self._info(terminated))

    def _observe(self) -> np.ndarray:
        state, task = self.state, self.task
        n = self.num_devices
        obs = np.empty(5 * n + 2, dtype=np.float32)
        m = np.clip(state.m, -1.0, 1.0)
        if self.write_frame:
            devices = frame.turned(m, state.target[:, 2], state.last_action)
            obs[: 3 * n] = devices[:, :3].ravel()
            obs[3 * n : 4 * n] = devices[:, 3]
            obs[4 * n : 5 * n] = devices[:, 4]
        else:
            obs[: 3 * n] = m.ravel()
            obs[3 * n : 4 * n] = state.target[:, 2]
            obs[4 * n : 5 * n] = state.last_action
        obs[5 * n] = min(state.elapsed_s[0] / task.time_budget, 1.0)
        obs[5 * n + 1] = min(self._energy_j() / self.array_task.energy_budget_j, 1.0)
        return obs

    def _energy_j(self) -> float:
        return float(self.array_task.total(self.state.energy_j[None])[0])

    def _info(self, success: bool) -> dict:
        state = self.state
        switch = self.array_task.switching_time(state.switching_time_s[None], self._must_flip[None])
        aligned = np.einsum("ij,ij->i", state.m, state.target) >= self.task.success_threshold
        return {
            "energy_j": self._energy_j(),
            "switching_time_s": None if np.isnan(switch[0]) else float(switch[0]),
            "success": bool(success),
            "sim_steps": int(state.sim_steps.sum()),
            "bit_errors": int((~aligned).sum()),
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'")
            return None
        return render.trajectory_image(self._history, self.task.j_max)
