"""`stgym bench physics`: the integrator's speed as ratios against references run in the same process.

Reference case (issue 3): Ms 1e6 A/m, t 1.4 nm, d 40 nm, mu0 Hk_eff 0.2 T, alpha 0.01,
eta 0.6, theta0 0.05 rad, J = 2 Jc0, RK4 dt 1e-13 s for 20 ns (mz crosses 0 at ~9.17 ns) --
the defaults of make_params("stt-pma").

* single device against the plain C -O3 RK4 of benchmarks/llg_rk4_reference.c (compiled here
  with `cc` into a temporary directory), run interleaved with ours, best of each (the machine
  is shared: the best run is the least disturbed);
* against a NumPy per-step RK4 (fewer steps; a rate) and cmtj where importable (never a
  dependency; GPL, benchmark only);
* batched device-steps/s (simulate_batch, all OpenMP threads; also per CPU-second of one
  thread, the figure other processes on a shared machine barely change, for RK4 and for Heun
  at 300 K) and Heun-at-300-K against RK4 per step, single device and batched.
Targets: >= 0.9x plain C, >= 5x cmtj, >= 25 M device-steps/s batched, Heun >= 0.5x RK4 (single
device).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

C_SOURCE = Path(__file__).resolve().parent.parent / "benchmarks" / "llg_rk4_reference.c"
THETA0 = 0.05
DT = 1e-13
DURATION = 20e-9
TARGETS = {"ratio_vs_c": 0.9, "ratio_vs_cmtj": 5.0, "batched_device_steps_per_s": 25e6, "heun_vs_rk4": 0.5}


def main(args) -> int:
    report = run(quick=bool(getattr(args, "quick", False)))
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def run(quick: bool = False) -> dict:
    import physics_ext as px

    params = px.make_params("stt-pma")
    current = 2.0 * params.jc0
    m0 = np.array([math.sin(THETA0), 0.0, math.cos(THETA0)])
    repeats = 2 if quick else 11
    duration = DURATION
    load_before = os.getloadavg()[0]

    def ours():
        return px.simulate(params, m0, current, duration, DT)

    compiled = _compile_reference()
    best_ours, best_c, c_run, ours_run = math.inf, math.inf, None, None
    for _ in range(repeats):
        ours_run = ours()
        best_ours = min(best_ours, ours_run.wall_time_s)
        if compiled["binary"]:
            c_run = _run_reference(compiled["binary"], params, current, duration)
            best_c = min(best_c, c_run["best_s"])
    steps = ours_run.steps
    single_rate = steps / best_ours
    c_rate = steps / best_c if c_run else None

    numpy_steps = 2000 if quick else 20000
    numpy_rate = numpy_steps / min(_numpy_reference(params, current, m0, numpy_steps) for _ in range(2 if quick else 3))
    cmtj = _cmtj_reference(params, current, m0, 2e-9 if quick else duration)

    threads = px.simulation._llg.max_threads()
    n_devices = 256 if quick else 2048  # short runs, best of several: the least disturbed
    batch_duration = 1e-9 if quick else 0.5e-9
    pulses = np.full((n_devices, 1), current)
    batched_rate, batched_heun_rate, per_cpu_second, heun_per_cpu_second = 0.0, 0.0, 0.0, 0.0
    for _ in range(2 if quick else 7):
        cpu_start = time.thread_time()  # one thread: CPU time, which a busy machine barely inflates
        batch = px.simulate_batch(params, m0, pulses, batch_duration, DT, threads=1)
        per_cpu_second = max(per_cpu_second, float(batch.steps.sum()) / (time.thread_time() - cpu_start))
        cpu_start = time.thread_time()
        batch = px.simulate_batch(params, m0, pulses, batch_duration, DT, method="heun", temperature=300.0,
                                  threads=1)
        heun_per_cpu_second = max(heun_per_cpu_second,
                                  float(batch.steps.sum()) / (time.thread_time() - cpu_start))
        batch = px.simulate_batch(params, m0, pulses, batch_duration, DT, threads=threads)
        batched_rate = max(batched_rate, float(batch.steps.sum()) / batch.wall_time_s)
        batch = px.simulate_batch(params, m0, pulses, batch_duration, DT, method="heun", temperature=300.0,
                                  threads=threads)
        batched_heun_rate = max(batched_heun_rate, float(batch.steps.sum()) / batch.wall_time_s)

    heun_rate, rk4_rate = 0.0, 0.0  # per CPU-second: the ratio of two rates, robust to other load
    for _ in range(repeats):
        cpu_start = time.process_time()
        heun = px.simulate(params, m0, current, duration, DT, method="heun", temperature=300.0, seed=1)
        cpu_heun = time.process_time() - cpu_start
        rk4 = px.simulate(params, m0, current, duration, DT)
        cpu_rk4 = time.process_time() - cpu_start - cpu_heun
        heun_rate = max(heun_rate, heun.steps / cpu_heun)
        rk4_rate = max(rk4_rate, rk4.steps / cpu_rk4)

    report = {
        "reference_case": {
            "ms_a_per_m": params.ms, "thickness_m": params.thickness, "diameter_m": params.diameter,
            "mu0_hk_eff_t": params.hk_eff * 1.25663706212e-6, "alpha": params.alpha, "eta": params.eta,
            "theta0_rad": THETA0, "current_over_jc0": 2.0, "dt_s": DT, "duration_s": duration, "method": "rk4",
        },
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "load_average_1min": load_before,
        "switching_time_s": ours_run.switching_time_s,
        "single_steps_per_s": single_rate,
        "c_reference_steps_per_s": c_rate,
        "c_reference_switching_time_s": c_run["switching_time_s"] if c_run else None,
        "c_compiler": compiled["command"],
        "c_reference_error": compiled["error"],
        "ratio_vs_c": single_rate / c_rate if c_rate else None,
        "numpy_steps_per_s": numpy_rate,
        "ratio_vs_numpy": single_rate / numpy_rate,
        "cmtj_steps_per_s": cmtj.get("steps_per_s"),
        "cmtj_version": cmtj.get("version"),
        "cmtj_note": cmtj.get("note"),
        "ratio_vs_cmtj": single_rate / cmtj["steps_per_s"] if cmtj.get("steps_per_s") else None,
        "batched_device_steps_per_s": batched_rate,
        "batched_devices": n_devices,
        "batched_threads": threads,
        "batched_heun_device_steps_per_s": batched_heun_rate,
        "batched_device_steps_per_cpu_s": per_cpu_second,
        "batched_heun_device_steps_per_cpu_s": heun_per_cpu_second,
        "batched_heun_ns_per_device_step": 1e9 / heun_per_cpu_second,
        "batched_heun_vs_rk4": heun_per_cpu_second / per_cpu_second,
        "heun_steps_per_cpu_s": heun_rate,
        "rk4_steps_per_cpu_s": rk4_rate,
        "heun_vs_rk4": heun_rate / rk4_rate,
        "targets": TARGETS,
    }
    report["call_overhead"] = call_overhead(quick)
    report["meets_targets"] = {
        name: (bool(report[name] >= target) if report[name] is not None else None) for name, target in TARGETS.items()
    }
    return report


def call_overhead(quick: bool = False) -> dict:
    """Per-call cost of the Python API for one RL control interval (0.1 ns of stochastic Heun
    at dt 1 ps and 300 K: 100 steps), against the compiled core called with preallocated,
    prepacked arrays (best of several runs of `calls` calls each, microseconds per call)."""
    import physics_ext as px
    from physics_ext import _llg
    from physics_ext.simulation import _packed

    params = px.make_params("stt-pma")
    current, interval, dt, temperature = 1.5 * params.jc0, 1e-10, 1e-12, 300.0
    m0 = np.array([math.sin(THETA0), 0.0, math.cos(THETA0)])
    calls = 500 if quick else 3000
    row, m = _packed(params, temperature), m0.copy()
    currents, lengths = np.array([current]), np.array([interval])
    trace_t, trace_m = np.zeros(0), np.zeros((0, 3))
    m_batch, pulses = np.tile(m0, (64, 1)), np.full((64, 1), current)

    def best_us(function, n=calls) -> float:
        best = math.inf
        for _ in range(3 if quick else 5):
            start = time.perf_counter()
            function(n)
            best = min(best, time.perf_counter() - start)
        return best / n * 1e6

    def core(n):
        for seed in range(n):
            m[:] = m0
            _llg.run_fixed(row, m, currents, lengths, dt, 1, seed, math.nan, 1, trace_t, trace_m)

    def simulate(n):
        for seed in range(n):
            px.simulate(params, m0, current, interval, dt, method="heun", temperature=temperature, seed=seed)

    def batch(threads):
        def go(n):
            for _ in range(n):
                px.simulate_batch(params, m_batch, pulses, interval, dt, method="heun",
                                  temperature=temperature, threads=threads)
        return go

    core_us, simulate_us = best_us(core), best_us(simulate)
    batch_n = max(calls // 50, 10)
    return {
        "integrator_steps_per_call": int(round(interval / dt)),
        "core_us_per_call": core_us,
        "simulate_us_per_call": simulate_us,
        "simulate_overhead_us": simulate_us - core_us,
        "simulate_overhead_fraction": simulate_us / core_us - 1.0,
        "batch64_default_threads_us_per_call": best_us(batch(None), batch_n),
        "batch64_one_thread_us_per_call": best_us(batch(1), batch_n),
        "batch64_two_threads_us_per_call": best_us(batch(2), batch_n),
    }


def _compile_reference() -> dict:
    """Builds the C reference with `cc -O3` (and -march=native when STGYM_NATIVE=1, as setup.py)."""
    if not C_SOURCE.is_file():
        return {"binary": None, "command": None, "error": f"{C_SOURCE} not found (run from a source checkout)"}
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return {"binary": None, "command": None, "error": "no C compiler (cc) on PATH"}
    workdir = Path(tempfile.mkdtemp(prefix="stgym-bench-"))
    binary = workdir / "llg_rk4_reference"
    command = [compiler, "-O3"]
    if os.environ.get("STGYM_NATIVE") == "1":
        command.append("-march=native")
    command += ["-o", str(binary), str(C_SOURCE), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"binary": None, "command": " ".join(command), "error": done.stderr.strip()[-500:]}
    import atexit

    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return {"binary": str(binary), "command": " ".join(command[:-4] + ["...c"]), "error": None}


def _run_reference(binary: str, params, current: float, duration: float) -> dict:
    h_dl = params.h_dl_per_current_density * current
    args = [binary, repr(params.alpha), repr(params.hk_eff), repr(h_dl), repr(THETA0), repr(DT), repr(duration), "1"]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def _numpy_reference(params, current: float, m0: np.ndarray, steps: int) -> float:
    """Seconds for `steps` RK4 steps of the same equation, one NumPy call chain per stage."""
    from physics_ext import constants as c

    alpha = params.alpha
    g = c.GAMMA * c.MU0 / (1.0 + alpha**2)
    h_dl = params.h_dl_per_current_density * current
    p = np.array([0.0, 0.0, -1.0])
    hk = params.hk_eff

    def rhs(m):
        h = np.array([0.0, 0.0, hk * m[2]])
        mxh = np.cross(m, h)
        mxp = np.cross(m, p)
        return -g * (mxh + alpha * np.cross(m, mxh)) - g * h_dl * (np.cross(m, mxp) - alpha * mxp)

    m = m0.copy()
    start = time.perf_counter()
    for _ in range(steps):
        k1 = rhs(m)
        k2 = rhs(m + 0.5 * DT * k1)
        k3 = rhs(m + 0.5 * DT * k2)
        k4 = rhs(m + DT * k3)
        m = m + DT / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        m = m / np.linalg.norm(m)
    return time.perf_counter() - start


def _cmtj_reference(params, current: float, m0: np.ndarray, duration: float) -> dict:
    """cmtj's RK4 on the same junction, when the user has it installed (never required)."""
    try:
        import cmtj
    except ImportError:
        return {"note": "cmtj not installed (optional, benchmark only: pip install cmtj)"}
    from physics_ext import constants as c

    try:
        nx, ny, nz = params.demag_factors
        demag = [cmtj.CVector(nx, 0, 0), cmtj.CVector(0, ny, 0), cmtj.CVector(0, 0, nz)]
        layer = cmtj.Layer.createSTTLayer(
            id="free", mag=cmtj.CVector(*m0), anis=cmtj.CVector(0, 0, 1), Ms=c.MU0 * params.ms,
            thickness=params.thickness, cellSurface=params.area, demagTensor=demag, damping=params.alpha,
            SlonczewskiSpacerLayerParameter=1.0, beta=0.0, spinPolarisation=params.eta,
        )
        layer.setReferenceLayer(cmtj.CVector(0, 0, -1))
        junction = cmtj.Junction([layer])
        junction.setLayerAnisotropyDriver("free", cmtj.constantDriver(params.ku))
        junction.setLayerCurrentDriver("free", cmtj.constantDriver(current))
        best = math.inf
        for _ in range(2):
            junction.clearLog()
            start = time.perf_counter()
            junction.runSimulation(duration, DT, duration / 10)
            best = min(best, time.perf_counter() - start)
        final = junction.getLayerMagnetisation("free")
        return {
            "steps_per_s": round(duration / DT) / best,
            "version": getattr(cmtj, "__version__", None) or _dist_version("cmtj"),
            "note": f"final mz {final.z:+.4f} (its own STT prefactor convention)",
        }
    except Exception as error:  # an optional third-party API: report, never fail the benchmark
        return {"note": f"cmtj run failed: {type(error).__name__}: {error}"}


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _print_report(report: dict) -> None:
    def rate(value):
        if value is None:
            return "n/a"
        return f"{value / 1e6:8.2f} M steps/s" if value >= 1e5 else f"{value / 1e3:8.2f} k steps/s"

    def ratio(value, target=None):
        if value is None:
            return "n/a"
        text = f"{value:8.2f}x"
        return text + (f"  (target >= {target}x: {'met' if value >= target else 'NOT met'})" if target else "")

    overhead = report["call_overhead"]
    lines = [
        f"physics benchmark (reference case: RK4 dt 0.1 ps, 20 ns, J = 2 Jc0; mz = 0 at "
        f"{report['switching_time_s'] * 1e9:.4f} ns; {report['cpu_count']} CPUs, load {report['load_average_1min']:.1f})",
        f"  physics_ext single device   {rate(report['single_steps_per_s'])}",
        f"  plain C -O3 RK4             {rate(report['c_reference_steps_per_s'])}   ratio {ratio(report['ratio_vs_c'], 0.9)}",
        f"  NumPy per-step RK4          {rate(report['numpy_steps_per_s'])}   ratio {ratio(report['ratio_vs_numpy'])}",
        f"  cmtj                        {rate(report['cmtj_steps_per_s'])}   ratio {ratio(report['ratio_vs_cmtj'], 5.0)}"
        + (f"  [{report['cmtj_note']}]" if report["cmtj_note"] else ""),
        f"  batched ({report['batched_devices']} devices, {report['batched_threads']} threads)"
        f"  {rate(report['batched_device_steps_per_s'])}  (target >= 25 M: "
        f"{'met' if report['meets_targets']['batched_device_steps_per_s'] else 'NOT met'})",
        f"  batched Heun at 300 K       {rate(report['batched_heun_device_steps_per_s'])}",
        f"  batched, per CPU-second     {rate(report['batched_device_steps_per_cpu_s'])}  (one thread; "
        "unaffected by other load)",
        f"  batched Heun 300 K, per CPU-second {rate(report['batched_heun_device_steps_per_cpu_s'])}"
        f" = {report['batched_heun_ns_per_device_step']:.1f} ns/device-step (one thread)",
        f"  batched Heun 300 K vs RK4   {ratio(report['batched_heun_vs_rk4'])}  (per step, one thread; "
        "the 3 normals per step cost more than the 2 RHS evaluations RK4 adds)",
        f"  Heun 300 K vs RK4 per step  {ratio(report['heun_vs_rk4'], 0.5)}",
        "  per call, one 0.1 ns control interval (100 Heun steps at 300 K):",
        f"    compiled core {overhead['core_us_per_call']:.1f} us, px.simulate "
        f"{overhead['simulate_us_per_call']:.1f} us (+{overhead['simulate_overhead_us']:.1f} us), "
        f"simulate_batch of 64 {overhead['batch64_default_threads_us_per_call']:.0f} us "
        f"(default threads) / {overhead['batch64_one_thread_us_per_call']:.0f} us (1 thread) / "
        f"{overhead['batch64_two_threads_us_per_call']:.0f} us (2 threads)",
    ]
    if report["c_reference_error"]:
        lines.append(f"  C reference unavailable: {report['c_reference_error']}")
    print("\n".join(lines))
