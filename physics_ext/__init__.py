"""Compiled macrospin LLGS integrator for MTJ free layers (SI units).

>>> import physics_ext as px
>>> params = px.make_params("stt-pma")
>>> res = px.simulate(params, (0.05, 0.0, 1.0), 2 * params.jc0, 20e-9, 1e-13)
>>> round(res.switching_time_s * 1e9, 2)
9.17

See README "Physics" for the model, units and sign conventions.
"""
from physics_ext.device import (
    DEVICES,
    PARAMETER_NAMES,
    DeviceParams,
    ParameterError,
    cylinder_demag_factors,
    make_params,
)
from physics_ext.simulation import METHODS, BatchResult, SimulationResult, simulate, simulate_batch

__all__ = [
    "DEVICES",
    "METHODS",
    "PARAMETER_NAMES",
    "BatchResult",
    "DeviceParams",
    "ParameterError",
    "SimulationResult",
    "cylinder_demag_factors",
    "make_params",
    "simulate",
    "simulate_batch",
]
