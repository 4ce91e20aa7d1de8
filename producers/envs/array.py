"""`SpinTorqueArray-v0`: write a bit pattern into a row of N MTJs, one current per device."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import physics_ext as px
from producers.envs import render
from producers.envs.task import EpisodeState, SwitchingTask


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

    ## Observation Space

    `Box(low, high, (5N + 2,), float32)`:

    | Num            | Observation                          | Min | Max | Unit                   |
    |----------------|--------------------------------------|-----|-----|------------------------|
    | 3i .. 3i+2     | m_x, m_y, m_z of device i            | -1  | 1   | 1 (unit vector)        |
    | 3N + i         | target bit of device i (±1, as m_z)  | -1  | 1   | 1                      |
    | 4N + i         | last action of device i              | -1  | 1   | fraction of `j_max`    |
    | 5N             | elapsed fraction of the time budget  | 0   | 1   | 1                      |
    | 5N + 1         | energy used so far, all devices      | 0   | 1   | N · E_budget           |

    ## Rewards

    Per step: `success_bonus` when the episode ends in success, minus
    `energy_weight · ΔE / (N · E_budget)` (ΔE: the Joule energy of all devices in the step, J;
    E_budget as in `SpinTorque-v0`), minus `time_weight · control_interval / time_budget`.

    ## Starting State

    Each device stores a random bit, tilted by a thermal polar angle as in `SpinTorque-v0`.
    Devices whose stored bit already equals their target only need to stay put.

    ## Episode End

    - Termination (success): every device had its current off during the step and ends it
      with m_i·target_i ≥ `success_threshold`.
    - Truncation: the time budget is spent without success.

    `info`: `energy_j` (J, all devices, episode so far), `switching_time_s` (s, when the last
    device that had to flip first crossed, or None until all have), `success`, `sim_steps`
    (integrator steps, all devices), `bit_errors` (devices not at their target bit now).

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
    | `success_bonus`, `energy_weight`, `time_weight` | float | 1.0, 1.0, 0.1 | reward weights   |
    | `render_mode`       | str or None   | None      | "rgb_array"                               |

    ## Vectorized environment

    No native vector env: use `gymnasium.vector.SyncVectorEnv` (each copy already batches
    its N devices into one integrator call).

    ## Version History

    - v0: initial version.

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
        render_mode: str | None = None,
    ) -> None:
        if num_devices < 1:
            raise ValueError(f"num_devices must be >= 1, got {num_devices}")
        if not pitch > 0:
            raise ValueError(f"pitch must be > 0 m, got {pitch!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = SwitchingTask.create(
            "stt-pma", device_params, j_max, 5.0, control_interval, time_budget, dt, method,
            temperature, success_threshold, action_deadband, success_bonus, energy_weight,
            time_weight, "random",
        )
        if dipolar_coupling and pitch <= self.task.params.diameter:
            raise ValueError(
                f"pitch ({pitch} m) must exceed the device diameter ({self.task.params.diameter} m)"
            )
        self.num_devices = num_devices
        self.dipolar_coupling = dipolar_coupling
        self.pitch = pitch
        self.render_mode = render_mode
        n = num_devices
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        low = np.concatenate([-np.ones(5 * n), [0.0, 0.0]]).astype(np.float32)
        high = np.ones(5 * n + 2, dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.state: EpisodeState | None = None
        self._history: list = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        n = self.num_devices
        m0, opposite = self.task.initial_states(self.np_random, n)
        stored_z = -opposite[:, 2]
        if options and "pattern" in options:
            pattern = np.asarray(options["pattern"], dtype=float)
            if pattern.shape != (n,) or not np.all(np.abs(pattern) == 1):
                raise ValueError(f"options['pattern'] must be {n} values of ±1, got {pattern!r}")
        else:
            pattern = np.where(self.np_random.random(n) < 0.5, 1.0, -1.0)
        target = np.zeros((n, 3))
        target[:, 2] = pattern
        self.state = EpisodeState.start(m0, target)
        self._must_flip = stored_z != pattern
        self._history = [(0.0, m0.copy(), np.zeros(n))]
        return self._observe(), self._info(False)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        n = self.num_devices
        action = np.asarray(action, dtype=float).reshape(n)
        seeds = self.np_random.integers(0, 2**63, size=n, dtype=np.uint64)
        params = self._coupled_params() if self.dipolar_coupling else [self.task.params] * n
        energy_before = self.state.energy_j.sum()
        _, device_done, _ = self.task.step(self.state, action, seeds, params=params)
        task = self.task
        terminated = bool(device_done.all())
        elapsed = float(self.state.elapsed_s[0])
        truncated = not terminated and elapsed >= task.time_budget * (1 - 1e-9)
        reward = (
            task.success_bonus * terminated
            - task.energy_weight * (self.state.energy_j.sum() - energy_before)
            / (n * task.energy_budget_j)
            - task.time_weight * task.control_interval / task.time_budget
        )
        if self.render_mode is not None:
            self._history.append((elapsed, self.state.m.copy(), action.copy()))
        return self._observe(), float(reward), terminated, truncated, self._info(terminated)

    def _coupled_params(self) -> list[px.DeviceParams]:
        """Each device's params with its neighbours' point-dipole field added (A/m)."""
        base = self.task.params
        moment_volume = base.ms * base.volume  # A m^2 per unit m
        prefactor = moment_volume / (4 * math.pi * self.pitch**3)
        m = self.state.m
        stray = np.zeros_like(m)
        # Neighbours along x: H = prefactor (3 (m·x) x − m) for r = pitch along the row.
        neighbour_field = prefactor * (3 * m[:, 0:1] * np.array([1.0, 0.0, 0.0]) - m)
        stray[1:] += neighbour_field[:-1]
        stray[:-1] += neighbour_field[1:]
        applied = np.asarray(base.field, dtype=float)
        return [
            dataclasses.replace(base, field=tuple(applied + stray[i])) for i in range(len(m))
        ]

    def _observe(self) -> np.ndarray:
        state, task = self.state, self.task
        n = self.num_devices
        obs = np.empty(5 * n + 2, dtype=np.float32)
        obs[: 3 * n] = np.clip(state.m, -1.0, 1.0).ravel()
        obs[3 * n : 4 * n] = state.target[:, 2]
        obs[4 * n : 5 * n] = state.last_action
        obs[5 * n] = min(state.elapsed_s[0] / task.time_budget, 1.0)
        obs[5 * n + 1] = min(state.energy_j.sum() / (n * task.energy_budget_j), 1.0)
        return obs

    def _info(self, success: bool) -> dict:
        state = self.state
        flips = state.switching_time_s[self._must_flip]
        if len(flips) and np.isnan(flips).any():
            switching_time = None
        else:
            switching_time = float(flips.max()) if len(flips) else 0.0
        aligned = np.einsum("ij,ij->i", state.m, state.target) >= self.task.success_threshold
        return {
            "energy_j": float(state.energy_j.sum()),
            "switching_time_s": switching_time,
            "success": bool(success),
            "sim_steps": int(state.sim_steps.sum()),
            "bit_errors": int((~aligned).sum()),
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'")
            return None
        return render.trajectory_image(self._history, self.task.j_max)
