"""The switching task shared by every environment: device, pulse scaling, start states, physics
advance, observation, reward and episode end — written once, for arrays of copies.

A single env is the task with one copy, the native vector env steps many copies with one
batched integrator call, the array env is one episode over N coupled devices. Units are SI:
current density in A/m^2, times in s, energies in J.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

import physics_ext as px

OBS_M = slice(0, 3)
OBS_TARGET = slice(3, 6)
OBS_LAST_ACTION = 6
OBS_ELAPSED = 7
OBS_ENERGY = 8
OBS_SIZE = 9

# The tilt of the start state at 0 K, where there is no thermal distribution to draw from:
# a free layer exactly along its easy axis feels no spin torque at all.
ZERO_KELVIN_TILT_RAD = 0.02

# Below this many integrator steps per call, waking OpenMP threads costs more than they save.
PARALLEL_MIN_STEPS = 200_000


@dataclasses.dataclass(frozen=True)
class SwitchingTask:
    """Everything an environment needs to turn actions into physics and physics into rewards."""

    params: px.DeviceParams
    j_max: float
    control_interval: float
    time_budget: float
    dt: float
    method: str
    temperature: float
    success_threshold: float
    action_deadband: float
    success_bonus: float
    energy_weight: float
    time_weight: float
    write_direction: str
    energy_budget_j: float

    @classmethod
    def create(
        cls,
        device: str,
        device_params: dict | None,
        j_max: float | None,
        j_max_factor: float,
        control_interval: float,
        time_budget: float,
        dt: float,
        method: str,
        temperature: float,
        success_threshold: float,
        action_deadband: float,
        success_bonus: float,
        energy_weight: float,
        time_weight: float,
        write_direction: str,
    ) -> SwitchingTask:
        """Validates the arguments (ValueError naming the bad one) and derives the scales."""
        params = px.make_params(device, **(device_params or {}))
        if j_max is None:
            j_max = j_max_factor * params.jc0
        for name, value in (
            ("j_max", j_max), ("control_interval", control_interval),
            ("time_budget", time_budget), ("dt", dt),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 K, got {temperature!r}")
        if not 0 < success_threshold <= 1:
            raise ValueError(f"success_threshold must be in (0, 1], got {success_threshold!r}")
        if not 0 <= action_deadband < 1:
            raise ValueError(f"action_deadband must be in [0, 1), got {action_deadband!r}")
        if write_direction not in ("random", "down", "up"):
            raise ValueError(
                f"write_direction must be 'random', 'down' or 'up', got {write_direction!r}"
            )
        if time_budget < control_interval:
            raise ValueError(
                f"time_budget ({time_budget} s) is shorter than one control_interval "
                f"({control_interval} s)"
            )
        # The energy scale: J_max for the whole time budget at the highest resistance of the
        # current path (m exactly along +z feels no torque and stays there: for STT that is the
        # antiparallel state), so the energy used never exceeds it.
        reference = px.simulate(
            params, np.array([0.0, 0.0, 1.0]), j_max, control_interval, dt, method=method,
            temperature=0.0, seed=0,
        )
        energy_budget_j = reference.energy_j * (time_budget / control_interval)
        return cls(
            params=params, j_max=float(j_max), control_interval=float(control_interval),
            time_budget=float(time_budget), dt=float(dt), method=method,
            temperature=float(temperature), success_threshold=float(success_threshold),
            action_deadband=float(action_deadband), success_bonus=float(success_bonus),
            energy_weight=float(energy_weight), time_weight=float(time_weight),
            write_direction=write_direction, energy_budget_j=float(energy_budget_j),
        )

    @property
    def max_steps(self) -> int:
        """Control intervals in the time budget."""
        return int(round(self.time_budget / self.control_interval))

    # --- start states -------------------------------------------------------------------------

    def initial_states(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Start magnetisations (n, 3) drawn from the thermal equilibrium around the stored bit,
        and targets (n, 3): the opposite pole (each episode writes the bit)."""
        if self.write_direction == "random":
            start_sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
        else:
            start_sign = np.full(n, 1.0 if self.write_direction == "down" else -1.0)
        theta = self.thermal_tilts(rng, n)
        phi = rng.uniform(0.0, 2.0 * math.pi, n)
        m0 = np.empty((n, 3))
        m0[:, 0] = np.sin(theta) * np.cos(phi)
        m0[:, 1] = np.sin(theta) * np.sin(phi)
        m0[:, 2] = np.cos(theta) * start_sign
        target = np.zeros((n, 3))
        target[:, 2] = -start_sign
        return m0, target

    def thermal_tilts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Polar angles (rad) from p(θ) ∝ sin θ exp(−Δ sin²θ), small-angle form (Δ ≫ 1)."""
        if self.temperature == 0:
            return np.full(n, ZERO_KELVIN_TILT_RAD)
        delta = self.params.thermal_stability(self.temperature)
        return np.sqrt(-np.log1p(-rng.random(n)) / delta)

    # --- physics --------------------------------------------------------------------------------

    def current_density(self, action: np.ndarray) -> np.ndarray:
        """A/m^2 for normalised actions: inside the dead band the current is off."""
        action = np.clip(action, -1.0, 1.0)
        return np.where(np.abs(action) <= self.action_deadband, 0.0, action * self.j_max)

    def advance(
        self, m: np.ndarray, current: np.ndarray, seeds: np.ndarray, params=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Integrate each copy for one control interval at constant current.

        One copy goes through `px.simulate`, several through one `px.simulate_batch` call.
        Returns (m_final (n, 3), energy_j (n,), switching_time_s (n,) NaN if none, steps (n,)).
        """
        if len(m) == 1 and params is None:
            result = px.simulate(
                self.params, m[0], float(current[0]), self.control_interval, self.dt,
                method=self.method, temperature=self.temperature, seed=int(seeds[0]),
            )
            switch_time = math.nan if result.switching_time_s is None else result.switching_time_s
            return (
                np.asarray(result.m_final, dtype=float)[None, :],
                np.array([result.energy_j]),
                np.array([switch_time]),
                np.array([result.steps]),
            )
        work = len(m) * self.control_interval / self.dt
        batch = px.simulate_batch(
            self.params if params is None else params, m, current[:, None],
            self.control_interval, self.dt, method=self.method,
            temperature=self.temperature, seeds=seeds,
            threads=1 if work < PARALLEL_MIN_STEPS else None,
        )
        return batch.m_final, batch.energy_j, batch.switching_time_s, batch.steps

    # --- observation, reward, episode end -------------------------------------------------------

    def observe(
        self, m: np.ndarray, target: np.ndarray, last_action: np.ndarray,
        elapsed_s: np.ndarray, energy_j: np.ndarray,
    ) -> np.ndarray:
        """Observation rows (n, OBS_SIZE), float32, in the layout of the class docstrings."""
        obs = np.empty((len(m), OBS_SIZE), dtype=np.float32)
        obs[:, OBS_M] = np.clip(m, -1.0, 1.0)
        obs[:, OBS_TARGET] = target
        obs[:, OBS_LAST_ACTION] = last_action
        obs[:, OBS_ELAPSED] = np.minimum(elapsed_s / self.time_budget, 1.0)
        obs[:, OBS_ENERGY] = np.minimum(energy_j / self.energy_budget_j, 1.0)
        return obs

    def outcome(
        self, m: np.ndarray, target: np.ndarray, current: np.ndarray, step_energy_j: np.ndarray,
        elapsed_s: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reward, terminated, truncated) after a control interval.

        Success (terminated): the current was off during the interval and m·target ≥ threshold
        at its end — the bit is written and holds without drive. Truncated: the time budget is
        spent without success.
        """
        aligned = np.einsum("ij,ij->i", m, target) >= self.success_threshold
        terminated = aligned & (current == 0.0)
        truncated = ~terminated & (elapsed_s >= self.time_budget * (1 - 1e-9))
        reward = (
            self.success_bonus * terminated
            - self.energy_weight * step_energy_j / self.energy_budget_j
            - self.time_weight * self.control_interval / self.time_budget
        )
        return reward, terminated, truncated

    def step(self, state: EpisodeState, action: np.ndarray, seeds: np.ndarray, rows=slice(None),
             params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply `action` (n,) to the copies `rows` of `state` for one control interval, in place.

        Returns (reward, terminated, truncated) of those copies. The switching time is the first
        crossing of m·target through zero (the integrator's interpolated crossing where it has
        one, else linear interpolation within the interval), measured from the episode start.
        """
        m0, target = state.m[rows], state.target[rows]
        current = self.current_density(action)
        m1, energy_j, crossing_s, sim_steps = self.advance(m0, current, seeds, params)
        before = np.einsum("ij,ij->i", m0, target)
        after = np.einsum("ij,ij->i", m1, target)
        elapsed = state.elapsed_s[rows]
        first_crossing = np.isnan(state.switching_time_s[rows]) & (before <= 0) & (after > 0)
        if first_crossing.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                interpolated = self.control_interval * before / (before - after)
            crossing_s = np.where(np.isfinite(crossing_s), crossing_s, interpolated)
            state.switching_time_s[rows] = np.where(
                first_crossing, elapsed + crossing_s, state.switching_time_s[rows]
            )
        elapsed = elapsed + self.control_interval
        state.m[rows] = m1
        state.last_action[rows] = action
        state.elapsed_s[rows] = elapsed
        state.energy_j[rows] += energy_j
        state.sim_steps[rows] += sim_steps
        state.steps[rows] += 1
        return self.outcome(m1, target, current, energy_j, elapsed)

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([-1, -1, -1, -1, -1, -1, -1, 0, 0], dtype=np.float32)
        high = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=np.float32)
        return low, high


@dataclasses.dataclass
class EpisodeState:
    """Per-copy episode state as arrays (n, ...); rows are copies (vector env) or devices (array)."""

    m: np.ndarray
    target: np.ndarray
    last_action: np.ndarray
    elapsed_s: np.ndarray
    energy_j: np.ndarray
    sim_steps: np.ndarray
    steps: np.ndarray
    switching_time_s: np.ndarray

    @classmethod
    def start(cls, m: np.ndarray, target: np.ndarray) -> EpisodeState:
        n = len(m)
        return cls(
            m=np.array(m, dtype=float), target=np.array(target, dtype=float),
            last_action=np.zeros(n), elapsed_s=np.zeros(n), energy_j=np.zeros(n),
            sim_steps=np.zeros(n, dtype=np.int64), steps=np.zeros(n, dtype=np.int64),
            switching_time_s=np.full(n, math.nan),
        )

    def restart(self, row: int, m: np.ndarray, target: np.ndarray) -> None:
        """Begin a new episode in copy `row` (the vector env's autoreset)."""
        self.m[row], self.target[row] = m, target
        self.last_action[row] = self.elapsed_s[row] = self.energy_j[row] = 0.0
        self.sim_steps[row] = self.steps[row] = 0
        self.switching_time_s[row] = math.nan

    def observe(self, task: SwitchingTask) -> np.ndarray:
        return task.observe(self.m, self.target, self.last_action, self.elapsed_s, self.energy_j)

    def info(self, row: int, success: bool) -> dict:
        """The physical quantities of copy `row`'s episode so far (SI units)."""
        switch = self.switching_time_s[row]
        return {
            "energy_j": float(self.energy_j[row]),
            "switching_time_s": None if math.isnan(switch) else float(switch),
            "success": bool(success),
            "sim_steps": int(self.sim_steps[row]),
        }
