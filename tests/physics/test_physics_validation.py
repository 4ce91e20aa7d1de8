"""The integrators against exact solutions: Kittel precession, the STT instability threshold,
the closed-form macrospin switching time, RK4 convergence order, DP45 tolerance, |m| = 1, energy."""
import math

import numpy as np
import pytest

import physics_ext as px
from physics_ext import constants as c

GAMMA_MU0 = c.GAMMA * c.MU0


def zero_anisotropy_params(h_z: float, alpha: float) -> px.DeviceParams:
    """Ku chosen to cancel the shape anisotropy (Hk_eff = 0): a pure Zeeman problem."""
    base = px.make_params("stt-pma", alpha=alpha)
    nx, _, nz = base.demag_factors
    ku = 0.5 * c.MU0 * base.ms**2 * (nz - nx)
    return px.make_params("stt-pma", alpha=alpha, ku=ku, field=(0.0, 0.0, h_z))


def zeeman_exact(t, h_z, alpha, theta0):
    """Exact LLG solution in a static field along z: tan(theta/2) decays, phi = gamma' H t."""
    rate = GAMMA_MU0 * h_z / (1.0 + alpha**2)
    theta = 2.0 * np.arctan(np.tan(theta0 / 2.0) * np.exp(-alpha * rate * np.asarray(t)))
    phi = rate * np.asarray(t)
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)


def fit_precession(times, traj):
    """(frequency in Hz, decay time in s) fitted from a trajectory."""
    phase = np.unwrap(np.arctan2(traj[:, 1], traj[:, 0]))
    omega = np.polyfit(times, phase, 1)[0]
    theta = np.arccos(np.clip(traj[:, 2], -1.0, 1.0))
    decay_rate = -np.polyfit(times, np.log(np.tan(theta / 2.0)), 1)[0]
    return omega / (2.0 * math.pi), 1.0 / decay_rate


def assert_kittel(params: px.DeviceParams, h_total: float, theta0: float) -> None:
    """Fitted f and tau of a 2 ns free precession from theta0 within 1e-4 of the Kittel values."""
    alpha = params.alpha
    res = px.simulate(params, m_from_angle(theta0), 0.0, 2e-9, 1e-13, trace=True)
    f, tau = fit_precession(res.times, res.trajectory)
    f_kittel = GAMMA_MU0 * h_total / (2.0 * math.pi * (1.0 + alpha**2))
    tau_kittel = (1.0 + alpha**2) / (alpha * GAMMA_MU0 * h_total)
    assert abs(f / f_kittel - 1.0) <= 1e-4
    assert abs(tau / tau_kittel - 1.0) <= 1e-4


def m_from_angle(theta0, phi0=0.0):
    return (math.sin(theta0) * math.cos(phi0), math.sin(theta0) * math.sin(phi0), math.cos(theta0))


def closed_form_switching_time(params: px.DeviceParams, x: float, theta0: float) -> float:
    """Exact macrospin time for mz to reach 0 (uniaxial, field-like 0, T = 0, J = x Jc0)."""
    alpha, u0 = params.alpha, math.cos(theta0)
    tau0 = (1.0 + alpha**2) / (alpha * GAMMA_MU0 * params.hk_eff)
    return tau0 * (
        math.log(1.0 / (1.0 - u0)) / (2.0 * (x - 1.0))
        + math.log(1.0 + u0) / (2.0 * (x + 1.0))
        + math.log((x - u0) / x) / (x * x - 1.0)
    )


def test_kittel_precession_in_pure_field():
    h_z, alpha = 0.5 / c.MU0, 0.02
    params = zero_anisotropy_params(h_z, alpha)
    assert abs(params.hk_eff) < 1e-6 * h_z
    assert_kittel(params, h_z, theta0=0.1)


def test_kittel_small_angle_precession_with_anisotropy_and_demag():
    """f = gamma mu0 (H + Hk_eff) / (2 pi (1 + alpha^2)) for the cylinder (Nx = Ny)."""
    h_z, alpha = 0.1 / c.MU0, 0.01
    params = px.make_params("stt-pma", alpha=alpha, field=(0.0, 0.0, h_z))
    assert_kittel(params, h_z + params.hk_eff, theta0=1e-3)


def test_no_switching_below_and_switching_above_jc0():
    params = px.make_params("stt-pma")
    below = px.simulate(params, m_from_angle(0.05), 0.95 * params.jc0, 100e-9, 2e-13)
    assert not below.switched and below.switching_time_s is None
    assert below.m_final[2] > math.cos(0.05)  # damped back toward +z
    above = px.simulate(params, m_from_angle(0.05), 1.05 * params.jc0, 200e-9, 2e-13, stop_mz=-0.5)
    assert above.switched and above.stopped
    expected = closed_form_switching_time(params, 1.05, 0.05)
    assert abs(above.switching_time_s / expected - 1.0) <= 1e-3


@pytest.mark.parametrize("x", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("method", ["rk4", "dp45"])
def test_switching_time_matches_closed_form(x, method):
    params = px.make_params("stt-pma")
    theta0 = 0.05
    res = px.simulate(params, m_from_angle(theta0), x * params.jc0, 30e-9, 1e-13, method=method, stop_mz=-0.9)
    expected = closed_form_switching_time(params, x, theta0)
    assert res.switched
    assert abs(res.switching_time_s / expected - 1.0) <= 1e-3
    # measured: ~1e-11 (rk4, dt 0.1 ps) and ~1e-9 (dp45, rtol 1e-9)
    assert abs(res.switching_time_s / expected - 1.0) <= 1e-6


def test_reference_case_switches_at_9_17_ns():
    params = px.make_params("stt-pma")
    assert params.hk_eff * c.MU0 == pytest.approx(0.2, rel=1e-12)
    res = px.simulate(params, m_from_angle(0.05), 2.0 * params.jc0, 20e-9, 1e-13)
    assert res.steps == 200_000
    assert res.switched and res.switching_time_s == pytest.approx(9.1646157e-9, rel=1e-7)


def test_rk4_global_error_is_fourth_order():
    h_z, alpha, theta0, duration = 1.0 / c.MU0, 0.1, 0.5, 0.2e-9
    params = zero_anisotropy_params(h_z, alpha)
    exact = zeeman_exact(duration, h_z, alpha, theta0)
    steps = np.array([2e-12, 1e-12, 5e-13, 2.5e-13])
    errors = [
        np.max(np.abs(px.simulate(params, m_from_angle(theta0), 0.0, duration, dt).m_final - exact))
        for dt in steps
    ]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 4.0) <= 0.3, (slope, errors)


@pytest.mark.parametrize("rtol", [1e-6, 1e-8, 1e-10])
def test_dp45_meets_its_tolerance_on_dense_output(rtol):
    h_z, alpha, theta0, duration = 1.0 / c.MU0, 0.1, 0.5, 0.2e-9
    params = zero_anisotropy_params(h_z, alpha)
    res = px.simulate(
        params, m_from_angle(theta0), 0.0, duration, 1e-12, method="dp45", rtol=rtol, atol=rtol * 1e-3, trace=True
    )
    assert len(res.times) == 201 and res.times[-1] == pytest.approx(duration)
    error = np.max(np.abs(res.trajectory - zeeman_exact(res.times, h_z, alpha, theta0)))
    assert error <= rtol  # measured ~0.3 rtol
    assert res.steps < 2000  # adaptive: 160 to 1040 steps measured


def test_dp45_event_location_stops_on_the_threshold():
    params = px.make_params("stt-pma")
    res = px.simulate(params, m_from_angle(0.05), 2.0 * params.jc0, 20e-9, 1e-13, method="dp45", stop_mz=0.0)
    assert res.stopped
    assert abs(res.m_final[2]) < 1e-9
    assert res.t_final_s == pytest.approx(res.switching_time_s, rel=1e-12)


@pytest.mark.parametrize("method", ["rk4", "heun", "dp45"])
def test_norm_is_preserved(method):
    params = px.make_params("stt-pma", field_like=0.3, field=(1e4, -2e4, 3e4))
    temperature = 300.0 if method == "heun" else 0.0
    res = px.simulate(params, (0.3, 0.2, 0.9), 3.0 * params.jc0, 5e-9, 1e-13, method=method,
                      temperature=temperature, trace=True)
    assert np.max(np.abs(np.linalg.norm(res.trajectory, axis=1) - 1.0)) <= 1e-12
    assert abs(np.linalg.norm(res.m_final) - 1.0) <= 1e-12


def test_joule_energy_constant_resistance_is_exact():
    params = px.make_params("stt-pma", tmr=0.0)
    current = 2.0 * params.jc0
    res = px.simulate(params, m_from_angle(0.05), current, 10e-9, 1e-13)
    expected = (current * params.area) ** 2 * params.r_p * 10e-9
    assert res.energy_j == pytest.approx(expected, rel=1e-12)
    sot = px.make_params("sot-pma")
    res = px.simulate(sot, m_from_angle(0.05), 1e11, 1e-9, 1e-13)
    assert res.energy_j == pytest.approx((1e11 * sot.hm_width * sot.hm_thickness) ** 2 * sot.r_hm * 1e-9, rel=1e-12)


def test_joule_energy_follows_tmr_resistance():
    """RK4 (trapezoid on R(m)) and DP45 (energy as a 4th ODE component) agree; AP -> P switching
    costs between the all-P and all-AP bounds."""
    params = px.make_params("stt-pma")
    current = 2.0 * params.jc0
    rk4 = px.simulate(params, m_from_angle(0.05), current, 20e-9, 1e-13)
    dp45 = px.simulate(params, m_from_angle(0.05), current, 20e-9, 1e-13, method="dp45", rtol=1e-10)
    assert rk4.energy_j == pytest.approx(dp45.energy_j, rel=1e-7)
    power_p = (current * params.area) ** 2 * params.r_p
    assert power_p * 20e-9 < rk4.energy_j < power_p * (1.0 + params.tmr) * 20e-9
    assert params.resistance((0, 0, 1)) == pytest.approx(params.r_ap)
    assert params.resistance((0, 0, -1)) == pytest.approx(params.r_p)


def test_piecewise_pulse_then_zero_current():
    params = px.make_params("stt-pma")
    pulses = np.array([3.0, 3.0, 0.0]) * params.jc0
    res = px.simulate(params, m_from_angle(0.05), pulses, None, 1e-13, segment_duration=4e-9)
    assert res.t_final_s == pytest.approx(12e-9) and res.steps == 120_000
    assert res.switched and res.m_final[2] < -0.99
    longer = px.simulate(params, m_from_angle(0.05), pulses[:2], 12e-9, 1e-13, segment_duration=4e-9)
    np.testing.assert_array_equal(longer.m_final, res.m_final)  # zero current after the pulses
    odd = px.simulate(params, m_from_angle(0.05), 0.0, 1.05e-12, 1e-13)
    assert odd.steps == 11 and odd.t_final_s == pytest.approx(1.05e-12)


def test_sot_positive_current_with_positive_bias_tilts_toward_minus_z():
    params = px.make_params("sot-pma")
    up = px.simulate(params, m_from_angle(0.05), 2.0 * params.jc0, 3e-9, 1e-13)
    down = px.simulate(params, m_from_angle(math.pi - 0.05), -2.0 * params.jc0, 3e-9, 1e-13)
    assert up.m_final[2] < -0.05 and up.m_final[1] < -0.9  # m pulled toward the spin polarization -y
    assert down.m_final[2] > 0.05 and down.m_final[1] > 0.9


def test_dp45_steps_exactly_onto_pulse_boundaries():
    params = px.make_params("stt-pma", field_like=0.2)
    pulses = np.array([4.0, 3.0, -1.0, 0.0]) * params.jc0
    rk4 = px.simulate(params, m_from_angle(0.05), pulses, None, 2.5e-14, segment_duration=2.5e-9)
    dp45 = px.simulate(params, m_from_angle(0.05), pulses, None, 1e-13, method="dp45", segment_duration=2.5e-9,
                       rtol=1e-11, atol=1e-14)
    assert dp45.t_final_s == rk4.t_final_s == pytest.approx(10e-9)
    np.testing.assert_allclose(dp45.m_final, rk4.m_final, atol=1e-8)
    assert rk4.switching_time_s is not None and rk4.switched
    assert dp45.switching_time_s == pytest.approx(rk4.switching_time_s, rel=1e-7)
    assert dp45.energy_j == pytest.approx(rk4.energy_j, rel=1e-8)


def test_trace_stride_and_grid():
    params = px.make_params("stt-pma")
    every = px.simulate(params, m_from_angle(0.05), params.jc0, 1e-11, 1e-13, trace=True)
    strided = px.simulate(params, m_from_angle(0.05), params.jc0, 1e-11, 1e-13, trace=10)
    assert len(every.times) == 101 and len(strided.times) == 11
    np.testing.assert_array_equal(strided.trajectory, every.trajectory[::10])
    np.testing.assert_allclose(strided.times, np.arange(11) * 1e-12, rtol=1e-12, atol=1e-25)
