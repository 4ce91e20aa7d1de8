"""`stgym simulate`: one macrospin run from the command line (see README "Physics")."""
from __future__ import annotations

import argparse
import re
import sys

# argparse takes "-1e-13" for an option (its own pattern knows only "-1" and "-1.5"); this
# pattern lets negative values in scientific notation through to our validation.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _one_line_error(message: str):
    """argparse errors of this subcommand as one line, exit code 2 (like UserError)."""
    print(f"stgym simulate: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def register(subparsers) -> None:
    """Declares this package's subcommands."""
    parser = subparsers.add_parser(
        "simulate",
        help="integrate one MTJ free layer (LLGS macrospin) and report switching and energy",
        description="Integrate one macrospin (SI units: A/m, A/m^2, s, K). Positive current "
        "density drives the free layer from +z toward -z.",
    )
    # Values are parsed by the handler, so a bad one is a one-line error naming it (exit 2).
    parser.add_argument("--device", default="stt-pma", help="stt-pma or sot-pma (default stt-pma)")
    parser.add_argument("--current-density", default=None, metavar="A/m^2",
                        help="current density (default: 2 x Jc0 of the device)")
    parser.add_argument("--duration", default="20e-9", metavar="S", help="integration time (default 20e-9)")
    parser.add_argument("--dt", default="1e-13", metavar="S",
                        help="time step; dp45: first step and trace interval (default 1e-13)")
    parser.add_argument("--method", default=None,
                        help="rk4, dp45 or heun (default: rk4, or heun when --temperature > 0)")
    parser.add_argument("--theta0", default="0.05", metavar="RAD", help="initial polar angle from +z (default 0.05)")
    parser.add_argument("--phi0", default="0", metavar="RAD", help="initial azimuth (default 0)")
    parser.add_argument("--temperature", default="0", metavar="K", help="temperature (default 0)")
    parser.add_argument("--field", default=None, metavar="HX,HY,HZ", help="applied field in A/m")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="device parameter override, repeatable (ms, ku, alpha, thickness, diameter, "
                        "eta, field_like, ra_product, tmr, spin_hall_angle, hm_thickness, hm_width, "
                        "hm_length, hm_resistivity)")
    parser.add_argument("--seed", default="0", help="random seed of the thermal field (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--trace", default=None, metavar="FILE.csv", help="write t_s,mx,my,mz per step")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="plot mx, my, mz(t)")
    parser.set_defaults(handler=run_simulate)
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    parser.error = _one_line_error


def _number(name: str, text: str) -> float:
    from physics_ext.device import check_finite

    return check_finite(name, text)


def _overrides(args: argparse.Namespace) -> dict:
    from physics_ext.device import PARAMETER_NAMES, ParameterError

    overrides: dict = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError("param", f"expected NAME=VALUE, got {item!r}")
        if name == "field":
            raise ParameterError("field", "give the applied field as --field HX,HY,HZ")
        if name not in PARAMETER_NAMES:
            raise ParameterError(name, f"unknown parameter (expected one of {', '.join(PARAMETER_NAMES)})")
        overrides[name] = _number(name, value)
    if args.field is not None:
        parts = args.field.split(",")
        if len(parts) != 3:
            raise ParameterError("field", f"expected HX,HY,HZ in A/m, got {args.field!r}")
        overrides["field"] = tuple(_number("field", part) for part in parts)
    return overrides


def run_simulate(args: argparse.Namespace) -> int:
    import json
    import math

    import physics_ext as px
    from physics_ext.device import ParameterError

    params = px.make_params(args.device, **_overrides(args))
    theta0, phi0 = _number("theta0", args.theta0), _number("phi0", args.phi0)
    temperature = _number("temperature", args.temperature)
    method = args.method or ("heun" if temperature > 0 else "rk4")
    jc0 = params.jc0
    current = 2.0 * jc0 if args.current_density is None else _number("current_density", args.current_density)
    seed_text = args.seed.strip()
    if not seed_text.isdigit():
        raise ParameterError("seed", f"expected a non-negative integer, got {args.seed!r}")
    duration, dt = _number("duration", args.duration), _number("dt", args.dt)
    if dt > 0 and duration / dt > 5e9:
        raise ParameterError("dt", f"{duration / dt:.3g} steps is too many; use a larger dt")
    want_trace = bool(args.trace or args.plot)
    stride = 1
    if want_trace and dt > 0 and duration > 0:
        stride = max(1, int(duration / dt / 200_000))
    m0 = (math.sin(theta0) * math.cos(phi0), math.sin(theta0) * math.sin(phi0), math.cos(theta0))
    res = px.simulate(
        params, m0, current, duration, dt, method=method, temperature=temperature,
        seed=int(seed_text), trace=stride if want_trace else False,
    )
    delta_temperature = temperature if temperature > 0 else 300.0
    report = {
        "device": params.device,
        "method": res.method,
        "switched": res.switched,
        "switching_time_s": res.switching_time_s,
        "final_m": [float(x) for x in res.m_final],
        "energy_j": res.energy_j,
        "steps": res.steps,
        "wall_time_s": res.wall_time_s,
        "steps_per_second": res.steps / res.wall_time_s if res.wall_time_s > 0 else None,
        "t_final_s": res.t_final_s,
        "hk_eff_a_per_m": params.hk_eff,
        "jc0_a_per_m2": jc0,
        "demag_factors": list(params.demag_factors),
        "thermal_stability": params.thermal_stability(delta_temperature),
        "thermal_stability_temperature_k": delta_temperature,
        "current_density_a_per_m2": current,
        "current_over_jc0": current / jc0 if jc0 else None,
        "duration_s": duration,
        "dt_s": dt,
        "theta0_rad": theta0,
        "phi0_rad": phi0,
        "temperature_k": temperature,
        "seed": int(seed_text),
        "parameters": params.as_dict(),
    }
    if args.trace:
        _write_trace(args.trace, res)
    if args.plot:
        _plot(args.plot, res, params, current)
    if args.json:
        print(json.dumps(report))
    else:
        _print_summary(report)
    return 0


def _write_trace(path: str, res) -> None:
    import numpy as np

    from stgym.errors import UserError

    table = np.column_stack([res.times, res.trajectory])
    try:
        np.savetxt(path, table, delimiter=",", header="t_s,mx,my,mz", comments="", fmt="%.17g")
    except OSError as error:
        raise UserError(f"trace: cannot write {path!r}: {error.strerror}") from None


def _plot(path: str, res, params, current: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stgym.errors import UserError

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for i, label in enumerate(("mx", "my", "mz")):
        ax.plot(res.times * 1e9, res.trajectory[:, i], label=label, linewidth=1)
    if res.switching_time_s is not None:
        ax.axvline(res.switching_time_s * 1e9, color="grey", linestyle=":", label="mz = 0")
    ax.set_xlabel("time (ns)")
    ax.set_ylabel("magnetization")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"{params.device}, J = {current:.3g} A/m² ({current / params.jc0:.2f} Jc0), {res.method}")
    ax.legend(loc="lower left")
    try:
        fig.savefig(path, dpi=120)
    except OSError as error:
        raise UserError(f"plot: cannot write {path!r}: {error.strerror}") from None
    finally:
        plt.close(fig)


def _print_summary(report: dict) -> None:
    t_sw = report["switching_time_s"]
    lines = [
        f"device            {report['device']} ({report['method']}, {report['steps']} steps, "
        f"{report['wall_time_s'] * 1e3:.1f} ms)",
        f"current density   {report['current_density_a_per_m2']:.4g} A/m^2 "
        f"({report['current_over_jc0']:.3f} x Jc0 = {report['jc0_a_per_m2']:.4g} A/m^2)",
        f"Hk_eff            {report['hk_eff_a_per_m']:.6g} A/m",
        "demag (Nx,Ny,Nz)  " + ", ".join(f"{n:.5f}" for n in report["demag_factors"]),
        f"thermal stability {report['thermal_stability']:.2f} (at {report['thermal_stability_temperature_k']:g} K)",
        f"switched          {'yes' if report['switched'] else 'no'}"
        + (f", mz crossed 0 at {t_sw * 1e9:.4f} ns" if t_sw is not None else ""),
        "final m           " + ", ".join(f"{x:+.6f}" for x in report["final_m"]),
        f"Joule energy      {report['energy_j']:.4g} J",
    ]
    print("\n".join(lines))
