"""Device parameters: validation, demag factors, derived quantities."""
import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, special

import physics_ext as px
from physics_ext import constants as c
from physics_ext.device import elliptic_ke
from stgym.errors import UserError


def demag_nz_by_bessel_integral(diameter, thickness):
    """Nz = (2R/L) int_0^inf J1(x)^2 (1 - exp(-x L/R)) / x^2 dx (Fourier-space magnetometric factor)."""
    radius = diameter / 2.0
    ratio = thickness / radius
    integrand = lambda x: special.j1(x) ** 2 * -np.expm1(-x * ratio) / (x * x)  # noqa: E731
    pieces = [integrate.quad(integrand, k * np.pi, (k + 1) * np.pi, epsabs=1e-15, epsrel=1e-13)[0]
              for k in range(4000)]
    tail_start = 4000 * np.pi  # J1(x)^2 ~ (1 + sin 2x) / (pi x) on average 1 / (pi x)
    tail = -np.expm1(-tail_start * ratio) / (2 * np.pi * tail_start**2) if ratio > 0 else 0.0
    return 2.0 / ratio * (math.fsum(pieces) + tail)


def test_codata_2018_constants():
    assert c.GAMMA == 1.76085963023e11
    assert c.MU0 == 1.25663706212e-6
    assert c.HBAR == 1.054571817e-34 and c.E_CHARGE == 1.602176634e-19 and c.KB == 1.380649e-23


@pytest.mark.parametrize("m", [0.0, 0.3, 0.9, 0.998776, 1.0 - 1e-10])
def test_elliptic_integrals_match_scipy(m):
    k_integral, e_integral = elliptic_ke(m)
    assert k_integral == pytest.approx(special.ellipk(m), rel=1e-14)
    assert e_integral == pytest.approx(special.ellipe(m), rel=1e-14)


def test_demag_factors_of_the_reference_pillar():
    nx, ny, nz = px.cylinder_demag_factors(40e-9, 1.4e-9)
    assert nz == pytest.approx(0.9055, abs=5e-5)
    assert nx == ny and nx + ny + nz == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("diameter,thickness", [(40e-9, 1.4e-9), (20e-9, 20e-9), (10e-9, 50e-9)])
def test_demag_closed_form_matches_bessel_integral(diameter, thickness):
    nz = px.cylinder_demag_factors(diameter, thickness)[2]
    assert nz == pytest.approx(demag_nz_by_bessel_integral(diameter, thickness), abs=2e-7)


def test_demag_limits():
    assert px.cylinder_demag_factors(1e-6, 1e-12)[2] == pytest.approx(1.0, abs=1e-5)  # thin film
    assert px.cylinder_demag_factors(1e-12, 1e-6)[2] == pytest.approx(0.0, abs=1e-5)  # long rod
    assert px.cylinder_demag_factors(1.0, 0.9065)[2] == pytest.approx(1 / 3, abs=1e-4)  # isotropic at L/D 0.9065


def test_derived_quantities():
    p = px.make_params("stt-pma")
    nx, _, nz = p.demag_factors
    assert p.hk_eff == pytest.approx(2 * p.ku / (c.MU0 * p.ms) - (nz - nx) * p.ms, rel=1e-15)
    assert p.hk_eff * c.MU0 == pytest.approx(0.2, rel=1e-12)
    jc0 = 2 * c.E_CHARGE * p.alpha * p.ms * p.thickness * c.MU0 * p.hk_eff / (c.HBAR * p.eta)
    assert p.jc0 == pytest.approx(jc0, rel=1e-14)
    assert p.volume == pytest.approx(math.pi * (20e-9) ** 2 * 1.4e-9, rel=1e-15)
    delta = c.MU0 * p.ms * p.hk_eff * p.volume / (2 * c.KB * 300.0)
    assert p.thermal_stability(300.0) == pytest.approx(delta, rel=1e-14)
    assert 40 < p.thermal_stability(300.0) < 45
    assert p.r_p == pytest.approx(p.ra_product / p.area) and p.r_ap == pytest.approx(2 * p.r_p)
    assert p.h_dl_per_current_density == pytest.approx(c.HBAR * p.eta / (2 * c.E_CHARGE * c.MU0 * p.ms * p.thickness))
    assert p.polarization == (0.0, 0.0, -1.0)
    sot = px.make_params("sot-pma")
    assert sot.polarization == (0.0, -1.0, 0.0) and sot.field[0] > 0
    assert sot.r_hm == pytest.approx(sot.hm_resistivity * sot.hm_length / (sot.hm_width * sot.hm_thickness))
    assert 1e11 < sot.jc0 < 1e13


def test_params_are_frozen_and_overridable():
    p = px.make_params("stt-pma", alpha=0.02, field=(1, 2, 3))
    assert p.alpha == 0.02 and p.field == (1.0, 2.0, 3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.alpha = 0.1
    assert dataclasses.replace(p, ms=8e5).ms == 8e5


@pytest.mark.parametrize(
    "overrides,name",
    [
        ({"ms": -1e6}, "ms"),
        ({"ms": 0.0}, "ms"),
        ({"alpha": float("nan")}, "alpha"),
        ({"thickness": float("inf")}, "thickness"),
        ({"diameter": "big"}, "diameter"),
        ({"ku": -1.0}, "ku"),
        ({"tmr": -0.5}, "tmr"),
        ({"ra_product": 0}, "ra_product"),
        ({"field": (1.0, 2.0)}, "field"),
        ({"field": (1.0, float("nan"), 0.0)}, "field"),
        ({"hm_resistivity": -1}, "hm_resistivity"),
        ({"bogus": 1.0}, "bogus"),
    ],
)
def test_impossible_parameters_name_the_parameter(overrides, name):
    with pytest.raises(px.ParameterError) as info:
        px.make_params("stt-pma", **overrides)
    assert info.value.parameter == name and str(info.value).startswith(f"{name}:")
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)


def test_unknown_device_and_bad_run_arguments():
    with pytest.raises(px.ParameterError, match="device"):
        px.make_params("mram-9000")
    p = px.make_params("stt-pma")
    for kwargs, name in [
        ({"dt": 0.0}, "dt"),
        ({"dt": -1e-13}, "dt"),
        ({"duration": float("nan")}, "duration"),
        ({"current_density": float("inf")}, "current_density"),
        ({"m0": (0, 0, 0)}, "m0"),
        ({"method": "euler"}, "method"),
        ({"seed": -1}, "seed"),
    ]:
        args = {"m0": (0, 0, 1), "current_density": 0.0, "duration": 1e-9, "dt": 1e-13} | kwargs
        with pytest.raises(px.ParameterError, match=name):
            px.simulate(p, **args)
