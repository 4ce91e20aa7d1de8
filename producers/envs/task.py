"""The switching task shared by every environment: device, pulse scaling, start states, physics
advance, observation, reward and episode end — written once, for arrays of copies.

A single env is the task with one copy, the native vector env steps many copies with one
batched integrator call, the array env is one episode over N coupled devices. Units are SI:
current density in A/m^2, times in s, energies in J.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

import physics_ext as px
from physics_ext import _llg
from physics_ext.simulation import _FIXED_METHOD_CODES, _packed

OBS_M = slice(0, 3)
OBS_TARGET = slice(3, 6)
OBS_LAST_ACTION = 6
OBS_ELAPSED = 7
OBS_ENERGY = 8
OBS_SIZE = 9
OBS_LOW = np.array([-1, -1, -1, -1, -1, -1, -1, 0, 0], dtype=np.float32)
OBS_HIGH = np.ones(OBS_SIZE, dtype=np.float32)

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
    thermal_stability: float  # Δ at `temperature` (inf at 0 K)

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
            thermal_stability=params.thermal_stability(temperature) if temperature > 0 else math.inf,
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
        return np.sqrt(-np.log1p(-rng.random(n)) / self.thermal_stability)

    # --- physics --------------------------------------------------------------------------------

    def current_density(self, action):
        """A/m^2 for normalised actions already clipped to [-1, 1] (arrays or floats): inside the
        dead band the current is off."""
        return np.where(np.abs(action) <= self.action_deadband, 0.0, action * self.j_max)

    def step_seeds(self, rng: np.random.Generator) -> np.ndarray:
        """The integrator seed of every control interval of an episode, drawn at its reset."""
        return rng.integers(0, 2**63, size=self.max_steps, dtype=np.uint64)

    def crossing_time(self, before, after, integrator_crossing_s):
        """When m·target went through zero inside the interval (s from its start): the
        integrator's interpolated m_z sign change, else linear interpolation of m·target."""
        if integrator_crossing_s is not None and integrator_crossing_s == integrator_crossing_s:
            return integrator_crossing_s
        return self.control_interval * before / (before - after)

    def outcome(self, alignment, current, step_energy_j, elapsed_s):
        """(reward, terminated, truncated) after a control interval, for arrays or scalars.

        Success (terminated): the current was off during the interval and m·target ≥ threshold
        at its end — the bit is written and holds without drive. Truncated: the time budget is
        spent without success.
        """
        terminated = (alignment >= self.success_threshold) & (current == 0.0)
        truncated = (elapsed_s >= self.time_budget * (1 - 1e-9)) & (terminated ^ True)
        reward = (
            self.success_bonus * terminated
            - self.energy_weight * step_energy_j / self.energy_budget_j
            - self.time_weight * self.control_interval / self.time_budget
        )
        return reward, terminated, truncated

    @functools.cached_property
    def _core(self) -> tuple[np.ndarray, int]:
        """(packed parameter row at `temperature`, method code) of the compiled core: the
        arguments `step_one` hands it without re-validating (create() validated them)."""
        return _packed(self.params, self.temperature), _FIXED_METHOD_CODES[self.method]

    def step_one(
        self, state: EpisodeState, action: float, seed: int
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """`step` of a one-copy state, returning the env's whole step tuple (observation,
        reward, terminated, truncated, info) built from Python floats: one call of the compiled
        core's lean interval entry (`_llg.run_interval`: the bits of `px.simulate` and of the
        batched integrator) on the state's m in place, no re-validation, no per-step array work
        beyond the state writes and the observation, so the env costs little more than the
        integrator."""
        action = min(max(float(action), -1.0), 1.0)
        current = 0.0 if abs(action) <= self.action_deadband else action * self.j_max
        row, method = self._core
        m = state.m[0]  # a view: the core overwrites it with the final state
        target_x, target_y, target_z = state.target[0].tolist()  # the poles ±z
        before = m.item(2) * target_z
        t_cross, energy, steps = _llg.run_interval(
            row, m, current, self.control_interval, self.dt, method, seed
        )
        x, y, z = m.tolist()
        after = z * target_z
        elapsed = state.elapsed_s.item(0)
        switching_s = state.switching_time_s.item(0)
        if before <= 0.0 < after and math.isnan(switching_s):
            switching_s = elapsed + self.crossing_time(before, after, t_cross)
            state.switching_time_s[0] = switching_s
        elapsed += self.control_interval
        energy_j = state.energy_j.item(0) + energy
        sim_steps = state.sim_steps.item(0) + steps
        state.last_action[0] = action
        state.elapsed_s[0] = elapsed
        state.energy_j[0] = energy_j
        state.sim_steps[0] = sim_steps
        state.steps[0] += 1
        reward, terminated, truncated = self.outcome(after, current, energy, elapsed)
        # the layout and clipping of `observe` (the integrator keeps |m| = 1 to rounding)
        observation = np.array([
            min(max(x, -1.0), 1.0), min(max(y, -1.0), 1.0), min(max(z, -1.0), 1.0),
            target_x, target_y, target_z, action,
            min(elapsed / self.time_budget, 1.0), min(energy_j / self.energy_budget_j, 1.0),
        ], dtype=np.float32)
        info = {
            "energy_j": energy_j,
            "switching_time_s": None if math.isnan(switching_s) else switching_s,
            "success": bool(terminated),
            "sim_steps": sim_steps,
        }
        return observation, float(reward), bool(terminated), bool(truncated), info

    def step(self, state: EpisodeState, action: np.ndarray, seeds: np.ndarray, rows=slice(None),
             params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply `action` (n,) to the copies `rows` of `state` for one control interval, in place,
        all of them in one `px.simulate_batch` call (`params`: one DeviceParams per row, for
        coupled devices). Returns (reward, terminated, truncated) of those copies. The switching
        time is the first crossing of m·target through zero, from the episode start.
        """
        action = np.clip(action, -1.0, 1.0)
        m0, target = state.m[rows], state.target[rows]
        current = self.current_density(action)
        work = len(m0) * self.control_interval / self.dt
        batch = px.simulate_batch(
            self.params if params is None else params, m0, current[:, None],
            self.control_interval, self.dt, method=self.method,
            temperature=self.temperature, seeds=seeds,
            threads=1 if work < PARALLEL_MIN_STEPS else None,
        )
        m1 = batch.m_final
        before = np.einsum("ij,ij->i", m0, target)
        after = np.einsum("ij,ij->i", m1, target)
        elapsed = state.elapsed_s[rows]
        first_crossing = np.isnan(state.switching_time_s[rows]) & (before <= 0) & (after > 0)
        if first_crossing.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                crossing_s = np.where(
                    np.isfinite(batch.switching_time_s), batch.switching_time_s,
                    self.control_interval * before / (before - after),
                )
            state.switching_time_s[rows] = np.where(
                first_crossing, elapsed + crossing_s, state.switching_time_s[rows]
            )
        elapsed = elapsed + self.control_interval
        state.m[rows] = m1
        state.last_action[rows] = action
        state.elapsed_s[rows] = elapsed
        state.energy_j[rows] += batch.energy_j
        state.sim_steps[rows] += batch.steps
        state.steps[rows] += 1
        return self.outcome(after, current, batch.energy_j, elapsed)

    def observe(
        self, m: np.ndarray, target: np.ndarray, last_action: np.ndarray,
        elapsed_s: np.ndarray, energy_j: np.ndarray,
    ) -> np.ndarray:
        """Observation rows (n, OBS_SIZE), float32, in the layout of the class docstrings."""
        obs = np.empty((len(m), OBS_SIZE), dtype=np.float32)
        obs[:, OBS_M] = m
        obs[:, OBS_TARGET] = target
        obs[:, OBS_LAST_ACTION] = last_action
        obs[:, OBS_ELAPSED] = elapsed_s / self.time_budget
        obs[:, OBS_ENERGY] = energy_j / self.energy_budget_j
        # the integrator keeps |m| = 1 to rounding; the time and energy fractions end at 1
        return np.clip(obs, OBS_LOW, OBS_HIGH, out=obs)

    def observe_one(self, state: EpisodeState) -> np.ndarray:
        """`observe` of a one-copy state, (OBS_SIZE,), built from scalars (cheaper per step)."""
        m, target = state.m[0], state.target[0]
        return np.array([
            min(max(m[0], -1.0), 1.0), min(max(m[1], -1.0), 1.0), min(max(m[2], -1.0), 1.0),
            target[0], target[1], target[2], state.last_action[0],
            min(state.elapsed_s[0] / self.time_budget, 1.0),
            min(state.energy_j[0] / self.energy_budget_j, 1.0),
        ], dtype=np.float32)

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return OBS_LOW.copy(), OBS_HIGH.copy()


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
