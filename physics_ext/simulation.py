"""simulate() and simulate_batch(): validated inputs, packed for the compiled core (_llg)."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from physics_ext import _llg
from physics_ext import constants as c
from physics_ext.device import DeviceParams, ParameterError, check_finite, check_positive

METHODS = ("rk4", "dp45", "heun")
_FIXED_METHOD_CODES = {"rk4": 0, "heun": 1}
_NPAR = 18
PACKED_FIELD = slice(3, 6)  # the applied field (hx, hy, hz) [A/m] in a packed row


@dataclass(frozen=True)
class SimulationResult:
    """One device's run. Times in s, energy in J.

    switched: final mz has the opposite sign of the initial mz. switching_time_s: first time
    mz changes sign (linear interpolation between steps; dense output for dp45), None if never.
    t_final_s: time reached (duration, or the stop_mz event). times/trajectory: trace=True only.
    """

    m_final: np.ndarray
    switched: bool
    switching_time_s: float | None
    energy_j: float
    steps: int
    wall_time_s: float
    t_final_s: float
    stopped: bool
    method: str
    times: np.ndarray | None = None
    trajectory: np.ndarray | None = None


@dataclass(frozen=True)
class BatchResult:
    """N devices' runs; switching_time_s is NaN where mz never changed sign."""

    m_final: np.ndarray
    energy_j: np.ndarray
    switching_time_s: np.ndarray
    switched: np.ndarray
    steps: np.ndarray
    t_final_s: np.ndarray
    wall_time_s: float


def pack(params: DeviceParams, temperature: float = 0.0) -> np.ndarray:
    """The float64 parameter row of the compiled core (layout: _llg.pxd, P_*)."""
    if not isinstance(params, DeviceParams):
        raise ParameterError("params", f"expected a DeviceParams (from make_params), got {type(params).__name__}")
    g0, g1, ref = params.conductance_model()
    row = np.array(
        [
            c.GAMMA * c.MU0 / (1.0 + params.alpha**2),
            params.alpha,
            params.hk_eff,
            *params.field,
            *params.polarization,
            params.h_dl_per_current_density,
            params.field_like,
            params.thermal_noise_coefficient(temperature),
            g0,
            g1,
            *ref,
            params.current_area,
        ],
        dtype=np.float64,
    )
    assert row.shape == (_NPAR,)
    return row


def _packed(params: DeviceParams, temperature: float) -> np.ndarray:
    """pack() once per DeviceParams and temperature (cached on the instance), read-only."""
    rows = params.packed_rows
    row = rows.get(temperature)
    if row is None:
        row = pack(params, temperature)
        row.flags.writeable = False
        rows[temperature] = row
    return row


def _pack_rows(params, temperature, n: int, method: str) -> np.ndarray:
    """(n, NPAR) parameter rows of a batch: one DeviceParams or n, scalar or (n,) temperature."""
    if np.ndim(temperature) == 0:
        temperature = _check_temperature(temperature, method)
        if isinstance(params, DeviceParams):  # the common case: one row for every device
            rows = np.empty((n, _NPAR))
            rows[:] = _packed(params, temperature)
            return rows
        temperatures = [temperature] * n
    else:
        array = np.asarray(temperature, dtype=np.float64)
        if array.shape != (n,):
            raise ParameterError("temperature", f"expected a scalar or ({n},) temperatures in K, got shape {array.shape}")
        checked = {t: _check_temperature(t, method) for t in set(array.tolist())}
        temperatures = [checked[t] for t in array.tolist()]
    if isinstance(params, DeviceParams):
        if len(set(temperatures)) == 1:
            rows = np.empty((n, _NPAR))
            rows[:] = _packed(params, temperatures[0])
            return rows
        params = [params] * n
    if len(params) != n:
        raise ParameterError("params", f"expected one DeviceParams or {n}, got {len(params)}")
    rows = np.empty((n, _NPAR))
    for i, (device, temp) in enumerate(zip(params, temperatures)):
        if not isinstance(device, DeviceParams):
            raise ParameterError("params", f"expected DeviceParams, got {type(device).__name__}")
        rows[i] = _packed(device, temp)
    return rows


def _check_temperature(temperature, method: str) -> float:
    temperature = check_finite("temperature", temperature, "a temperature in K, >= 0")
    if temperature < 0.0:
        raise ParameterError("temperature", f"expected a temperature in K, >= 0, got {temperature!r}")
    if temperature > 0.0 and method != "heun":
        raise ParameterError("temperature", f"T > 0 needs method='heun' (the stochastic integrator), not {method!r}")
    return temperature


def _check_m0(m0) -> np.ndarray:
    """A fresh float64 (3,) copy of m0 (the core overwrites it with the final state)."""
    try:
        m = np.array(m0, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise ParameterError("m0", f"expected three components, got {m0!r}") from None
    x, y, z = m.tolist()  # scalar checks: cheaper than three NumPy reductions on 3 numbers
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)) or not (x or y or z):
        raise ParameterError("m0", f"expected a finite nonzero vector, got {m0!r}")
    return m


def _check_method(method: str, allowed=METHODS) -> str:
    if method not in allowed:
        raise ParameterError("method", f"expected one of {', '.join(allowed)}, got {method!r}")
    return method


def _segments(current_density, duration, segment_duration) -> tuple[np.ndarray, np.ndarray, float]:
    """(current per segment, segment lengths, duration): a pulse sequence ends in zero current."""
    if np.ndim(current_density) == 0:
        current = check_finite("current_density", current_density, "a current density in A/m^2")
        duration = check_positive("duration", duration, "a duration in s, > 0")
        return np.array([current]), np.array([duration]), duration
    pulses = np.asarray(current_density, dtype=np.float64)
    if pulses.ndim != 1 or pulses.size == 0 or not np.all(np.isfinite(pulses)):
        raise ParameterError("current_density", "expected a float or a non-empty 1-D array of finite A/m^2")
    segment = check_positive("segment_duration", segment_duration, "a segment duration in s, > 0")
    total = segment * pulses.size
    duration = total if duration is None else check_positive("duration", duration, "a duration in s, > 0")
    n_full = min(pulses.size, int(math.floor(duration / segment * (1 + 1e-12))))
    currents = list(pulses[:n_full])
    lengths = [segment] * n_full
    covered = segment * n_full
    if duration > covered * (1 + 1e-12):
        currents.append(pulses[n_full] if n_full < pulses.size else 0.0)
        lengths.append(duration - covered)
    return np.array(currents), np.array(lengths), duration


def simulate(
    params: DeviceParams,
    m0,
    current_density,
    duration: float | None,
    dt: float,
    method: str = "rk4",
    temperature: float = 0.0,
    seed: int = 0,
    segment_duration: float | None = None,
    trace: bool | int = False,
    stop_mz: float | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> SimulationResult:
    """Integrates one macrospin from m0 (normalised) for ``duration`` s.

    current_density: A/m^2, a float (constant) or a 1-D array of piecewise-constant segments of
    ``segment_duration`` s each; after the last segment the current is zero (duration None:
    exactly the pulses). Positive J drives +z toward -z.
    method: "rk4" (fixed dt, |m| renormalised), "heun" (stochastic Heun, thermal field at
    ``temperature`` K, seeded), "dp45" (adaptive, rtol/atol on m; dt is the first step and the
    trace interval, trace by dense output). Fixed-step runs take steps of exactly dt; a segment
    that is not a whole number of steps ends with one shorter step.
    trace: True records every step (every dt for dp45), an int n every n-th step.
    stop_mz: end the run where mz crosses this value (event location).
    """
    method = _check_method(method)
    temperature = _check_temperature(temperature, method)
    m = _check_m0(m0)
    if (
        not trace and stop_mz is None and method != "dp45"
        and isinstance(current_density, (float, int)) and isinstance(params, DeviceParams)
    ):
        # the common case (one constant-current interval, e.g. an RL control step): scalar
        # checks, the cached packed row, one call of the compiled core, no trace buffers
        current = check_finite("current_density", current_density, "a current density in A/m^2")
        duration = check_positive("duration", duration, "a duration in s, > 0")
        dt = check_positive("dt", dt, "a time step in s, > 0")
        row = _packed(params, temperature)
        seed = _check_seed(seed)
        mz0 = m[2]
        start = time.perf_counter()
        t_cross, energy, steps = _llg.run_interval(
            row, m, current, duration, dt, _FIXED_METHOD_CODES[method], seed
        )
        wall = time.perf_counter() - start
        return SimulationResult(
            m_final=m,
            switched=bool((m[2] < 0.0) != (mz0 < 0.0)),
            switching_time_s=None if t_cross != t_cross else t_cross,
            energy_j=energy,
            steps=steps,
            wall_time_s=wall,
            t_final_s=duration,
            stopped=False,
            method=method,
        )
    currents, lengths, duration = _segments(current_density, duration, segment_duration)
    dt = check_positive("dt", dt, "a time step in s, > 0")
    stop = math.nan if stop_mz is None else check_finite("stop_mz", stop_mz)
    stride = int(trace) if not isinstance(trace, bool) else 1
    if stride < 1:
        raise ParameterError("trace", f"expected True/False or a stride >= 1, got {trace!r}")
    if not trace:
        capacity = 0
    elif method == "dp45":
        capacity = int(duration / dt) + 3
    else:
        capacity = int(sum(int(length / dt + 1e-9) + 1 for length in lengths)) // stride + 3
    if capacity > 50_000_000:
        raise ParameterError("trace", f"{capacity} trace points is too many; pass a stride (trace=n)")
    trace_t = np.zeros(capacity)
    trace_m = np.zeros((capacity, 3))
    if not isinstance(params, DeviceParams):
        raise ParameterError("params", f"expected a DeviceParams (from make_params), got {type(params).__name__}")
    row = _packed(params, temperature)
    mz0 = m[2]
    start = time.perf_counter()
    if method == "dp45":
        rtol = check_positive("rtol", rtol)
        atol = check_positive("atol", atol)
        out = _llg.run_dp45(row, m, currents, lengths, dt, rtol, atol, stop, trace_t, trace_m)
    else:
        seed = _check_seed(seed)
        out = _llg.run_fixed(
            row, m, currents, lengths, dt, _FIXED_METHOD_CODES[method], seed, stop, stride, trace_t, trace_m
        )
    wall = time.perf_counter() - start
    rc, t_cross, t_end, energy, steps, n_trace, stopped = out
    if rc == -2:
        raise ParameterError("rtol", f"dp45 step size underflow at rtol={rtol}, atol={atol}")
    return SimulationResult(
        m_final=m,
        switched=bool((m[2] < 0.0) != (mz0 < 0.0)),
        switching_time_s=None if math.isnan(t_cross) else t_cross,
        energy_j=energy,
        steps=int(steps),
        wall_time_s=wall,
        t_final_s=t_end,
        stopped=stopped,
        method=method,
        times=trace_t[:n_trace].copy() if trace else None,
        trajectory=trace_m[:n_trace].copy() if trace else None,
    )


def _check_seed(seed) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise ParameterError("seed", f"expected an integer in [0, 2^64), got {seed!r}") from None
    if value != seed or not 0 <= value < 2**64:
        raise ParameterError("seed", f"expected an integer in [0, 2^64), got {seed!r}")
    return value


def simulate_batch(
    params: DeviceParams | Sequence[DeviceParams],
    m0,
    pulses,
    segment_duration: float,
    dt: float,
    method: str = "rk4",
    temperature=0.0,
    seeds=None,
    threads: int | None = None,
    stop_mz: float | None = None,
) -> BatchResult:
    """Integrates N independent devices in parallel (OpenMP over devices, GIL released).

    params: one DeviceParams for all, or a sequence of N. m0: (N, 3) (or (3,) for all).
    pulses: (N, K) current densities [A/m^2], K segments of ``segment_duration`` s each.
    temperature: K, scalar or (N,). seeds: (N,) uint64 (default 0..N-1), one independent
    random stream per device. threads: OpenMP threads (default: one per 500,000 device-steps, at
    most all cores: a parallel region costs milliseconds on a busy machine); the result does
    not depend on it. Device i gives exactly
    the bits of simulate(params[i], m0[i], pulses[i], None, dt, method, temperature[i],
    seeds[i], segment_duration).
    """
    method = _check_method(method, tuple(_FIXED_METHOD_CODES))
    pulse_array = np.ascontiguousarray(pulses, dtype=np.float64)
    if pulse_array.ndim == 1:
        pulse_array = pulse_array[:, None]
    if pulse_array.ndim != 2 or pulse_array.shape[1] == 0 or not np.isfinite(pulse_array).all():
        raise ParameterError("pulses", "expected an (N, K) array of finite current densities in A/m^2")
    n = pulse_array.shape[0]
    m = np.array(m0, dtype=np.float64)
    if m.shape == (3,):
        m = np.tile(m, (n, 1))
    if m.shape != (n, 3) or not np.isfinite(m).all() or (m == 0.0).all(axis=1).any():
        raise ParameterError("m0", f"expected ({n}, 3) finite nonzero vectors, got shape {m.shape}")
    m = np.ascontiguousarray(m)
    rows = _pack_rows(params, temperature, n, method)
    segment = check_positive("segment_duration", segment_duration, "a segment duration in s, > 0")
    dt = check_positive("dt", dt, "a time step in s, > 0")
    if seeds is None:
        seed_array = np.arange(n, dtype=np.uint64)
    else:
        seed_array = np.ascontiguousarray(seeds)
        kind = seed_array.dtype.kind
        if seed_array.shape != (n,) or kind not in "iu" or (kind == "i" and (seed_array < 0).any()):
            raise ParameterError("seeds", f"expected ({n},) non-negative integers")
        seed_array = seed_array.astype(np.uint64, copy=False)
    if threads is None:
        # a parallel region costs a thread wake-up (milliseconds on a busy machine): small
        # batches (an RL control interval) run on one thread, ~1 thread per 500,000 device-steps
        work = n * sum(int(segment / dt + 1e-9) + 1 for _ in range(pulse_array.shape[1]))
        threads = max(1, min(_llg.max_threads(), work // 500_000))
    if int(threads) < 1:
        raise ParameterError("threads", f"expected >= 1, got {threads!r}")
    stop = math.nan if stop_mz is None else check_finite("stop_mz", stop_mz)
    lengths = np.full(pulse_array.shape[1], segment)
    t_cross = np.empty(n)
    energy = np.empty(n)
    steps = np.empty(n, dtype=np.int64)
    t_end = np.empty(n)
    mz0 = m[:, 2].copy()
    start = time.perf_counter()
    _llg.run_batch(
        rows, m, pulse_array, lengths, dt, _FIXED_METHOD_CODES[method], seed_array, stop,
        int(threads), t_cross, energy, steps, t_end,
    )
    wall = time.perf_counter() - start
    return BatchResult(
        m_final=m,
        energy_j=energy,
        switching_time_s=t_cross,
        switched=(m[:, 2] < 0.0) != (mz0 < 0.0),
        steps=steps,
        t_final_s=t_end,
        wall_time_s=wall,
    )
