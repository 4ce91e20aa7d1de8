"""The switching task shared by every environment: device, pulse scaling, start states, physics
advance, observation, reward and episode end — written once, for arrays of copies.

A single env is the task with one copy, the native vector env steps many copies with one
call of the compiled interval kernel (`_intervals.pyx`, which every env steps through), the
array env is one episode over N coupled devices. Units are SI: current density in A/m^2,
times in s, energies in J.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

import physics_ext as px
from physics_ext import _llg
from physics_ext.simulation import _FIXED_METHOD_CODES, PACKED_FIELD, _packed
from producers.envs import _intervals
from producers.envs.threads import ThreadChooser

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

# Below this many integrator steps per call, waking OpenMP threads costs more than they save
# (64 copies x 100 steps, ~80 us on one core: 2 threads take 58 instead of 96 us on an idle
# 2-core machine). A machine busy with other processes is better served by threads=1 (the
# vector env times both, see threads.py).
PARALLEL_MIN_STEPS = 4096
_THREADS = _llg.max_threads()


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
        """Start magnetisations and targets (n, 3) of n episodes drawn from `rng` (see
        `restart`)."""
        state = self.new_state(rng.random((n, 3)))
        return state.m, state.target

    def new_state(self, uniforms: np.ndarray) -> EpisodeState:
        """An episode state of len(uniforms) copies at their start (see `restart`)."""
        state = EpisodeState.empty(len(uniforms))
        self.restart(state, state.all_rows, uniforms)
        return state

    def restart(self, state: EpisodeState, rows: np.ndarray, uniforms: np.ndarray) -> None:
        """Begin new episodes in copies `rows` of `state`: m from the thermal equilibrium
        around the stored bit, the target the opposite pole (each episode writes the bit),
        time, energy and steps at zero. Row k of `uniforms` (len(rows), 3), uniform in [0, 1),
        picks the stored bit (write_direction 'random'), the polar tilt and the azimuth."""
        uniforms = np.asarray(uniforms, dtype=float)
        if self.write_direction == "random":
            stored = np.where(uniforms[:, 0] < 0.5, 1.0, -1.0)
        else:
            stored = np.full(len(uniforms), 1.0 if self.write_direction == "down" else -1.0)
        state.compiled(self).restart(
            rows, stored, self.thermal_tilts(uniforms[:, 1]), 2.0 * math.pi * uniforms[:, 2]
        )

    def thermal_tilts(self, uniforms: np.ndarray) -> np.ndarray:
        """Polar angles (rad) from p(θ) ∝ sin θ exp(−Δ sin²θ), small-angle form (Δ ≫ 1), by
        inverting the distribution at `uniforms` in [0, 1)."""
        if self.temperature == 0:
            return np.full(len(uniforms), ZERO_KELVIN_TILT_RAD)
        return np.sqrt(-np.log1p(-uniforms) / self.thermal_stability)

    def episode_draws(self, rngs) -> tuple[np.ndarray, np.ndarray]:
        """(start uniforms (n, 3), integrator seeds (n, max_steps)) of n episodes: episode i
        draws from `rngs[i]` as a reset does — its start state, then the seed of every control
        interval."""
        uniforms = np.empty((len(rngs), 3))
        seeds = np.empty((len(rngs), self.max_steps), dtype=np.uint64)
        for i, rng in enumerate(rngs):
            uniforms[i] = rng.random(3)
            seeds[i] = self.step_seeds(rng)
        return uniforms, seeds

    def step_seeds(self, rng: np.random.Generator) -> np.ndarray:
        """The integrator seed of every control interval of an episode, drawn at its reset
        (63 random bits each, straight from the bit generator)."""
        return rng.bit_generator.random_raw(self.max_steps) >> np.uint64(1)

    # --- physics --------------------------------------------------------------------------------

    @functools.cached_property
    def packed_row(self) -> np.ndarray:
        """The packed device row at `temperature` (1, NPAR) of the compiled core."""
        return _packed(self.params, self.temperature)[None, :]

    @functools.cached_property
    def kernel_row(self) -> np.ndarray:
        """The task row of the compiled interval kernel (layout: `_intervals.pyx`, T_*):
        create() validated it, the kernel trusts it."""
        row = np.array([
            self.j_max, self.action_deadband, self.control_interval, self.dt,
            _FIXED_METHOD_CODES[self.method], self.success_threshold, self.time_budget,
            self.success_bonus, self.energy_weight, self.time_weight, self.energy_budget_j,
        ])
        assert row.shape == (_intervals.task_row_size(),)
        row.flags.writeable = False
        return row

    def step(
        self, state: EpisodeState, action, seeds, rows=None, field=None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply `action` (k,) to the copies `rows` (k indices; None: all) of `state` for one
        control interval, in place, with the integrator seeds `seeds` (k,): one compiled call,
        the rows on `threads` OpenMP threads (None: one thread for little work, else the
        faster of 1 and all cores as the task's calls measure it, see `ThreadChooser`; the
        results do not depend on it). `field` (n, 3), A/m:
        a field added to each row's applied field for this interval (coupled devices' stray
        fields).

        The action is clipped to [-1, 1]; inside the dead band the current is off. The
        switching time is the first crossing of m·target through zero, from the episode start
        (the integrator's interpolated m_z sign change). Success (terminated): the current was
        off during the interval and m·target ≥ threshold at its end — the bit is written and
        holds without drive. Truncated: the time budget is spent without success. Reward:
        bonus on success − energy_weight · E_step / E_budget − time_weight · interval / budget.

        Returns (reward, terminated, truncated) for every row of the state (zero outside
        `rows`).
        """
        n = len(state.m)
        rows = state.all_rows if rows is None else np.asarray(rows, dtype=np.intp)
        par = self.packed_row
        if field is not None:
            par = np.repeat(par, n, axis=0)
            par[:, PACKED_FIELD] += field
        reward = np.empty(n)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        copies = state.compiled(self)
        action = np.asarray(action, dtype=float).reshape(len(rows))
        seeds = np.asarray(seeds, dtype=np.uint64).reshape(len(rows))

        def advance(threads: int) -> None:
            copies.step(par, action, seeds, rows, threads, reward, terminated.view(np.int8),
                        truncated.view(np.int8))

        if threads is None and self.parallel_threads(len(rows)) > 1:
            self._chooser.run(advance, work=len(rows))
        else:
            advance(1 if threads is None else threads)
        return reward, terminated, truncated

    @functools.cached_property
    def _chooser(self) -> ThreadChooser:
        return ThreadChooser(_THREADS)

    def parallel_threads(self, copies: int) -> int:
        """OpenMP threads for one interval of `copies` copies: all cores (OMP_NUM_THREADS) once
        the integrator steps pay for waking them, else 1."""
        return 1 if copies * self.control_interval / self.dt < PARALLEL_MIN_STEPS else _THREADS

    def episode(self, state: EpisodeState, seeds: np.ndarray) -> _intervals.Episode:
        """Copy 0 of `state` as a single env steps it, with its integrator seeds (max_steps,):
        `episode.step_env(action)` returns the env's whole step tuple (observation, reward,
        terminated, truncated, info) from one compiled call."""
        return _intervals.Episode(self.packed_row, seeds, *state.kernel_arrays(self))

    def observe(self, state: EpisodeState) -> np.ndarray:
        """Observation rows (n, OBS_SIZE), float32, in the layout of the class docstrings."""
        obs = np.empty((len(state.m), OBS_SIZE), dtype=np.float32)
        state.compiled(self).observe(obs)
        return obs

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

    @classmethod
    def empty(cls, n: int) -> EpisodeState:
        """n copies, every array allocated and not yet filled (see SwitchingTask.restart)."""
        return cls(
            m=np.empty((n, 3)), target=np.empty((n, 3)), last_action=np.empty(n),
            elapsed_s=np.empty(n), energy_j=np.empty(n), sim_steps=np.empty(n, dtype=np.int64),
            steps=np.empty(n, dtype=np.int64), switching_time_s=np.empty(n),
        )

    def kernel_arrays(self, task: SwitchingTask) -> tuple:
        """The arguments of the interval kernel's views (`_intervals.Copies`) of these arrays."""
        return (task.kernel_row, self.m, self.target, self.last_action, self.elapsed_s,
                self.energy_j, self.sim_steps, self.steps, self.switching_time_s)

    def compiled(self, task: SwitchingTask) -> _intervals.Copies:
        """The interval kernel's view of these arrays for `task` (made once per state)."""
        copies = self.__dict__.get("_compiled")
        if copies is None or copies[0] is not task:
            copies = (task, _intervals.Copies(*self.kernel_arrays(task)))
            self.__dict__["_compiled"] = copies
        return copies[1]

    @functools.cached_property
    def all_rows(self) -> np.ndarray:
        """Every row's index (intp)."""
        return np.arange(len(self.m), dtype=np.intp)

    def observe(self, task: SwitchingTask) -> np.ndarray:
        return task.observe(self)
