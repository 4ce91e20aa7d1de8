"""Thermal field: the stochastic Heun run reaches the Boltzmann distribution of a small-Delta
free layer, whatever the time step (the field variance scales as 1/dt)."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

import physics_ext as px
from physics_ext import _llg
from physics_ext import constants as c

TEMPERATURE = 300.0
N_DEVICES = 20000
EDGES = np.linspace(-1.0, 1.0, 21)


def small_particle(mu0_hk_eff=0.2, diameter=10e-9, thickness=1e-9, ms=1e6, alpha=1.0) -> px.DeviceParams:
    nx, _, nz = px.cylinder_demag_factors(diameter, thickness)
    ku = 0.5 * c.MU0 * ms * (mu0_hk_eff / c.MU0 + (nz - nx) * ms)
    return px.make_params("stt-pma", diameter=diameter, thickness=thickness, ms=ms, ku=ku, alpha=alpha)


def boltzmann(delta):
    """(bin probabilities of mz on EDGES, <mx^2>) for p(mz) ~ exp(-Delta (1 - mz^2))."""
    weight = lambda z: math.exp(delta * (z * z - 1.0))  # noqa: E731
    norm = integrate.quad(weight, -1.0, 1.0)[0]
    probs = np.array([integrate.quad(weight, a, b)[0] for a, b in zip(EDGES[:-1], EDGES[1:])]) / norm
    mz2 = integrate.quad(lambda z: z * z * weight(z), -1.0, 1.0)[0] / norm
    return probs, 0.5 * (1.0 - mz2)


@pytest.fixture(scope="module")
def equilibrium_runs():
    params = small_particle()
    rng = np.random.default_rng(2026)
    start = rng.normal(size=(N_DEVICES, 3))
    start /= np.linalg.norm(start, axis=1)[:, None]  # isotropic: far from equilibrium
    runs = {}
    for dt in (2e-13, 1e-13):
        # 0.5 ns = 7 intra-well relaxation times (alpha = 1), several well-to-well hops at Delta ~ 1.9
        runs[dt] = px.simulate_batch(
            params, start, np.zeros((N_DEVICES, 1)), 0.5e-9, dt, method="heun",
            temperature=TEMPERATURE, seeds=np.arange(N_DEVICES, dtype=np.uint64) + 7_000,
        )
    return params, runs


def test_small_particle_has_small_delta():
    assert small_particle().thermal_stability(TEMPERATURE) == pytest.approx(1.896, abs=1e-3)


@pytest.mark.parametrize("dt", [2e-13, 1e-13])
def test_mz_histogram_is_boltzmann(equilibrium_runs, dt):
    params, runs = equilibrium_runs
    probs, _ = boltzmann(params.thermal_stability(TEMPERATURE))
    mz = runs[dt].m_final[:, 2]
    counts = np.histogram(mz, EDGES)[0]
    assert counts.sum() == N_DEVICES
    result = stats.chisquare(counts, probs * N_DEVICES)
    assert result.pvalue > 0.01, result
    assert 0.45 < np.mean(mz > 0.0) < 0.55  # both wells populated


def test_chi_square_detects_a_ten_percent_error_in_delta(equilibrium_runs):
    """The test above has power: the same samples reject a Delta (i.e. a noise variance) 10 % off."""
    params, runs = equilibrium_runs
    counts = np.histogram(runs[1e-13].m_final[:, 2], EDGES)[0]
    for wrong in (0.9, 1.1):
        probs, _ = boltzmann(wrong * params.thermal_stability(TEMPERATURE))
        assert stats.chisquare(counts, probs * N_DEVICES).pvalue < 1e-3


@pytest.mark.parametrize("dt", [2e-13, 1e-13])
def test_mean_mx_squared_matches_boltzmann(equilibrium_runs, dt):
    params, runs = equilibrium_runs
    _, mx2_exact = boltzmann(params.thermal_stability(TEMPERATURE))
    mx2 = runs[dt].m_final[:, 0] ** 2
    standard_error = mx2.std() / math.sqrt(N_DEVICES)
    assert abs(mx2.mean() - mx2_exact) < 4.0 * standard_error, (mx2.mean(), mx2_exact, standard_error)


def test_equilibrium_does_not_depend_on_dt(equilibrium_runs):
    _, runs = equilibrium_runs
    a, b = (runs[dt].m_final[:, 2] ** 2 for dt in (2e-13, 1e-13))
    combined_error = math.hypot(a.std(), b.std()) / math.sqrt(N_DEVICES)
    assert abs(a.mean() - b.mean()) < 4.0 * combined_error
    assert stats.ks_2samp(np.abs(runs[2e-13].m_final[:, 2]), np.abs(runs[1e-13].m_final[:, 2])).pvalue > 0.01


def test_thermal_field_variance_formula():
    params = small_particle()
    sigma = params.thermal_field_std(300.0, 1e-13)
    expected = math.sqrt(2 * params.alpha * c.KB * 300.0 / (c.GAMMA * c.MU0**2 * params.ms * params.volume * 1e-13))
    assert sigma == pytest.approx(expected, rel=1e-14)
    assert params.thermal_field_std(300.0, 0.25e-13) == pytest.approx(2.0 * sigma, rel=1e-14)


def test_gaussian_generator_is_standard_normal_and_seeded():
    samples = _llg.normal_samples(42, 200_000)
    assert abs(samples.mean()) < 5 / math.sqrt(200_000)
    assert abs(samples.var() - 1.0) < 5 * math.sqrt(2 / 200_000)
    assert stats.kstest(samples, "norm").pvalue > 0.01
    np.testing.assert_array_equal(samples[:1000], _llg.normal_samples(42, 1000))
    assert not np.array_equal(samples[:1000], _llg.normal_samples(43, 1000))


def test_heun_is_reproducible_and_seed_dependent():
    params = small_particle()
    runs = [px.simulate(params, (0, 0, 1), 0.0, 0.2e-9, 1e-13, method="heun", temperature=300.0, seed=s)
            for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0].m_final, runs[1].m_final)
    assert not np.array_equal(runs[0].m_final, runs[2].m_final)


def test_temperature_needs_heun_and_must_be_non_negative():
    params = px.make_params("stt-pma")
    with pytest.raises(px.ParameterError, match="temperature"):
        px.simulate(params, (0, 0, 1), 0.0, 1e-9, 1e-13, method="rk4", temperature=300.0)
    with pytest.raises(px.ParameterError, match="temperature"):
        px.simulate(params, (0, 0, 1), 0.0, 1e-9, 1e-13, method="heun", temperature=-1.0)
