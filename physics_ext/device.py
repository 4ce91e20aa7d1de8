"""Device parameters (SI units), their validation, and the quantities derived from them.

Two devices share one parameter set:

* ``stt-pma`` -- a perpendicular MTJ switched by spin-transfer torque; the current flows
  through the pillar (area pi d^2/4), the polarizer is p = -z, Joule power I^2 R(m) with the
  TMR conductance interpolation between R_P = RA/area and R_AP = R_P (1 + TMR).
* ``sot-pma`` -- the same free layer on a heavy-metal strip; the current flows through the
  strip (cross-section hm_width * hm_thickness), spin polarization along -y, Joule power
  I^2 R_HM with R_HM = rho L / (w t). An in-plane bias field along +x (default 16 kA/m)
  breaks the symmetry: during the pulse m is pulled toward the spin axis -y with an mz tilt
  whose sign is sign(J Hx theta_SH) (Lee et al., APL 102, 112410 (2013)).

  What the sot-pma defaults do and do not give (measured with simulate_batch, Heun, 300 K,
  dt 1 ps, start 0.02 rad from +z): a constant pulse switched off abruptly leaves m near the
  equator (about (-0.14, -0.98, -0.12) after 1 ns at 2 jc0), an energy far above the equator
  saddle (-mu0 Ms Hx at m = +x), so the free precession that follows crosses the equator many
  times before damping captures it and the final pole is a matter of phase: 28 % of 2000
  write attempts at 2 jc0 for 1 ns, and 17-57 % (200-400 attempts each) for every 1 ns
  constant pulse of 1.5-3 jc0 with alpha in {0.01, 0.03, 0.05, 0.1}, bias 20-40 mT and
  field-like ratio in {-0.5, 0, 0.5} tried; no realistic choice of defaults makes
  constant pulses reliable, so the defaults are kept. What does switch deterministically is a
  ramp-down: the current-driven fixed point then moves continuously into the target
  hemisphere. With field_like=0.5 (this code's sign: H_FL = +0.5 H_DL along p; heavy-metal/
  CoFeB stacks have field-like torques of this size, Garello et al., Nat. Nanotech. 8, 587
  (2013)) 1 ns at 2 jc0 followed by a 0.5 ns linear ramp to zero switched 2000/2000; without
  a field-like torque even a 10 ns ramp gives only ~70 %. Agents on SpinTorqueSOT-v0 can
  shape such ramps (0.1 ns control intervals); pass device_params={"field_like": 0.5}.

Sign convention of both: positive current density drives the free layer from +z toward -z.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from physics_ext import constants as c
from stgym.errors import UserError

DEVICES = ("stt-pma", "sot-pma")


class ParameterError(UserError, ValueError):
    """An impossible parameter value; ``parameter`` names it (the CLI exits with code 2)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def elliptic_ke(m: float) -> tuple[float, float]:
    """Complete elliptic integrals K(m), E(m) of parameter m = k^2 in [0, 1) (AGM method)."""
    if not 0.0 <= m < 1.0:
        raise ValueError(f"elliptic parameter m={m!r} outside [0, 1)")
    a, b = 1.0, math.sqrt(1.0 - m)
    c_n = math.sqrt(m)
    power, correction = 0.5, 0.5 * m
    for _ in range(64):  # quadratic convergence: 6 rounds suffice for m < 1 - 1e-12
        if abs(c_n) <= 1e-15 * a:
            break
        a, b, c_n = 0.5 * (a + b), math.sqrt(a * b), 0.5 * (a - b)
        power *= 2.0
        correction += power * c_n * c_n
    k_integral = math.pi / (2.0 * a)
    return k_integral, k_integral * (1.0 - correction)


def cylinder_demag_factors(diameter: float, thickness: float) -> tuple[float, float, float]:
    """Magnetometric demagnetizing factors (Nx, Ny, Nz) of a circular cylinder, axis along z.

    Exact closed form (Joseph 1966; Beleggia et al., J. Phys. D 38, 3333 (2005), eps = 0)
    with zeta = thickness / diameter and k^2 = 1 / (1 + zeta^2):
    Nz = 1 + 4 / (3 pi zeta) * (1 - [(1 - zeta^2) E(k) + zeta^2 K(k)] / k), Nx = Ny = (1 - Nz) / 2.
    """
    zeta = thickness / diameter
    k_squared = 1.0 / (1.0 + zeta * zeta)
    k_integral, e_integral = elliptic_ke(k_squared)
    bracket = ((1.0 - zeta * zeta) * e_integral + zeta * zeta * k_integral) / math.sqrt(k_squared)
    nz = 1.0 + 4.0 / (3.0 * math.pi * zeta) * (1.0 - bracket)
    nx = 0.5 * (1.0 - nz)
    return nx, nx, nz


def _ku_for(mu0_hk_eff_tesla: float, ms: float, diameter: float, thickness: float) -> float:
    nx, _, nz = cylinder_demag_factors(diameter, thickness)
    return 0.5 * c.MU0 * ms * (mu0_hk_eff_tesla / c.MU0 + (nz - nx) * ms)


_MS, _T, _D = 1.0e6, 1.4e-9, 40e-9
_DEFAULTS = {
    "ms": _MS,
    "ku": _ku_for(0.2, _MS, _D, _T),  # mu0 Hk_eff = 0.2 T at the default geometry
    "alpha": 0.01,
    "thickness": _T,
    "diameter": _D,
    "eta": 0.6,
    "field_like": 0.0,
    "ra_product": 5e-12,  # 5 Ohm um^2
    "tmr": 1.0,
    "field": (0.0, 0.0, 0.0),
    "spin_hall_angle": 0.3,
    "hm_thickness": 4e-9,
    "hm_width": 50e-9,
    "hm_length": 100e-9,
    "hm_resistivity": 2e-6,  # beta-W, 200 uOhm cm
}
DEVICE_DEFAULTS = {
    "stt-pma": dict(_DEFAULTS),
    "sot-pma": dict(_DEFAULTS, field=(16e3, 0.0, 0.0)),
}

# name: (lower bound, bound is inclusive, what is expected) -- None means any finite value.
_BOUNDS = {
    "ms": (0.0, False, "saturation magnetization in A/m, > 0"),
    "ku": (0.0, True, "uniaxial anisotropy in J/m^3, >= 0"),
    "alpha": (0.0, True, "Gilbert damping, >= 0"),
    "thickness": (0.0, False, "free-layer thickness in m, > 0"),
    "diameter": (0.0, False, "pillar diameter in m, > 0"),
    "eta": (0.0, False, "spin-torque efficiency, > 0"),
    "field_like": None,
    "ra_product": (0.0, False, "resistance-area product in Ohm m^2, > 0"),
    "tmr": (0.0, True, "TMR ratio (1.0 = 100 %), >= 0"),
    "spin_hall_angle": None,
    "hm_thickness": (0.0, False, "heavy-metal thickness in m, > 0"),
    "hm_width": (0.0, False, "heavy-metal width in m, > 0"),
    "hm_length": (0.0, False, "heavy-metal length in m, > 0"),
    "hm_resistivity": (0.0, False, "heavy-metal resistivity in Ohm m, > 0"),
}


def check_finite(name: str, value, expected: str = "a finite number") -> float:
    """``value`` as a float, or ParameterError naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, f"expected {expected}, got {value!r}") from None
    if not math.isfinite(number):
        raise ParameterError(name, f"expected {expected}, got {value!r}")
    return number


def check_positive(name: str, value, expected: str = "a finite number > 0") -> float:
    number = check_finite(name, value, expected)
    if number <= 0.0:
        raise ParameterError(name, f"expected {expected}, got {value!r}")
    return number


@dataclass(frozen=True)
class DeviceParams:
    """One macrospin device, SI units (fields in A/m, lengths in m). Build with make_params().

    Frozen and validated once at construction; every derived quantity (demag factors -- two
    elliptic integrals --, Hk_eff, jc0, resistances, the packed row of the compiled core) is
    computed on first use and cached on the instance (functools.cached_property), so the
    per-call cost of simulate() does not grow with the device model.
    """

    device: str
    ms: float
    ku: float
    alpha: float
    thickness: float
    diameter: float
    eta: float
    field_like: float
    ra_product: float
    tmr: float
    field: tuple[float, float, float]
    spin_hall_angle: float
    hm_thickness: float
    hm_width: float
    hm_length: float
    hm_resistivity: float

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ParameterError("device", f"unknown device {self.device!r} (expected one of {', '.join(DEVICES)})")
        for name, bound in _BOUNDS.items():
            value = getattr(self, name)
            number = check_finite(name, value, bound[2] if bound else "a finite number")
            if bound is not None:
                low, inclusive, expected = bound
                if number < low or (number == low and not inclusive):
                    raise ParameterError(name, f"expected {expected}, got {value!r}")
            object.__setattr__(self, name, number)
        field = self.field
        if isinstance(field, str) or len(field) != 3:
            raise ParameterError("field", f"expected three components (hx, hy, hz) in A/m, got {field!r}")
        object.__setattr__(
            self, "field", tuple(check_finite("field", h, "finite components in A/m") for h in field)
        )
        if self.device == "sot-pma" and self.spin_hall_angle == 0.0:
            raise ParameterError("spin_hall_angle", "expected a nonzero spin-Hall angle for sot-pma")

    # --- geometry ---------------------------------------------------------------------------
    @functools.cached_property
    def area(self) -> float:
        """Pillar cross-section pi d^2 / 4 [m^2]."""
        return math.pi * self.diameter**2 / 4.0

    @functools.cached_property
    def volume(self) -> float:
        """Free-layer volume [m^3]."""
        return self.area * self.thickness

    @functools.cached_property
    def demag_factors(self) -> tuple[float, float, float]:
        """Magnetometric (Nx, Ny, Nz) of the cylinder; Nx = Ny, sum 1."""
        return cylinder_demag_factors(self.diameter, self.thickness)

    # --- fields -----------------------------------------------------------------------------
    @functools.cached_property
    def hk(self) -> float:
        """Bare anisotropy field 2 Ku / (mu0 Ms) [A/m]."""
        return 2.0 * self.ku / (c.MU0 * self.ms)

    @functools.cached_property
    def hk_eff(self) -> float:
        """Effective anisotropy field Hk - (Nz - Nx) Ms [A/m] (the demag field -Nx Ms m is
        parallel to m when Nx = Ny and exerts no torque)."""
        nx, _, nz = self.demag_factors
        return self.hk - (nz - nx) * self.ms

    @functools.cached_property
    def current_area(self) -> float:
        """Cross-section the current density flows through [m^2]: pillar (STT) or HM strip (SOT)."""
        if self.device == "sot-pma":
            return self.hm_width * self.hm_thickness
        return self.area

    @functools.cached_property
    def h_dl_per_current_density(self) -> float:
        """Damping-like field per current density [A/m per A/m^2]:
        hbar eta / (2 e mu0 Ms t) (STT), hbar theta_SH / (2 e mu0 Ms t) (SOT)."""
        efficiency = self.spin_hall_angle if self.device == "sot-pma" else self.eta
        return c.HBAR * efficiency / (2.0 * c.E_CHARGE * c.MU0 * self.ms * self.thickness)

    @functools.cached_property
    def polarization(self) -> tuple[float, float, float]:
        """Spin-polarization unit vector p of the torque (positive J drives m toward +z -> -z)."""
        return (0.0, -1.0, 0.0) if self.device == "sot-pma" else (0.0, 0.0, -1.0)

    @functools.cached_property
    def jc0(self) -> float:
        """Zero-temperature critical current density [A/m^2].

        STT: 2 e alpha Ms t mu0 Hk_eff / (hbar eta) (the instability threshold of m = +z).
        SOT: 2 e mu0 Ms t / (hbar theta_SH) * (Hk_eff / 2 - |Hx| / sqrt 2) (Lee et al.,
        APL 102, 112410 (2013)).
        """
        if self.device == "sot-pma":
            return (self.hk_eff / 2.0 - abs(self.field[0]) / math.sqrt(2.0)) / abs(self.h_dl_per_current_density)
        return self.alpha * self.hk_eff / self.h_dl_per_current_density

    def thermal_stability(self, temperature: float = 300.0) -> float:
        """Delta = mu0 Ms Hk_eff V / (2 kB T)."""
        temperature = check_positive("temperature", temperature, "a temperature in K, > 0")
        return c.MU0 * self.ms * self.hk_eff * self.volume / (2.0 * c.KB * temperature)

    def thermal_field_std(self, temperature: float, dt: float) -> float:
        """Per-component standard deviation of the thermal field, sqrt(2 alpha kB T / (gamma mu0^2 Ms V dt)) [A/m]."""
        return self.thermal_noise_coefficient(temperature) / math.sqrt(dt)

    def thermal_noise_coefficient(self, temperature: float) -> float:
        """sqrt(2 alpha kB T / (gamma mu0^2 Ms V)) [A/m sqrt(s)]; divide by sqrt(dt)."""
        return math.sqrt(
            2.0 * self.alpha * c.KB * temperature / (c.GAMMA * c.MU0**2 * self.ms * self.volume)
        )

    # --- resistances ------------------------------------------------------------------------
    @functools.cached_property
    def r_p(self) -> float:
        """Parallel MTJ resistance RA / area [Ohm]."""
        return self.ra_product / self.area

    @functools.cached_property
    def r_ap(self) -> float:
        """Antiparallel MTJ resistance R_P (1 + TMR) [Ohm]."""
        return self.r_p * (1.0 + self.tmr)

    @functools.cached_property
    def r_hm(self) -> float:
        """Heavy-metal strip resistance rho L / (w t) [Ohm]."""
        return self.hm_resistivity * self.hm_length / (self.hm_width * self.hm_thickness)

    def resistance(self, m) -> float:
        """Resistance of the current path at magnetization m [Ohm]: the MTJ for STT, with
        G(m) = (G_P + G_AP)/2 + (G_P - G_AP)/2 cos(theta) and cos(theta) = m . p (the
        reference layer is along the polarizer, so +z is the AP state); R_HM for SOT."""
        g0, g1, ref = self.conductance_model()
        return 1.0 / (g0 + g1 * (m[0] * ref[0] + m[1] * ref[1] + m[2] * ref[2]))

    def conductance_model(self) -> tuple[float, float, tuple[float, float, float]]:
        """(g0, g1, ref) with G(m) = g0 + g1 (m . ref) of the Joule-heated path."""
        return self._conductance

    @functools.cached_property
    def _conductance(self) -> tuple[float, float, tuple[float, float, float]]:
        if self.device == "sot-pma":
            return 1.0 / self.r_hm, 0.0, (0.0, 0.0, 1.0)
        g_p, g_ap = 1.0 / self.r_p, 1.0 / self.r_ap
        return 0.5 * (g_p + g_ap), 0.5 * (g_p - g_ap), self.polarization

    @functools.cached_property
    def packed_rows(self) -> dict:
        """{temperature: the compiled core's read-only parameter row}, filled by
        physics_ext.simulation (each row packed once per DeviceParams and temperature)."""
        return {}

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["field"] = list(self.field)
        return data


PARAMETER_NAMES = tuple(f.name for f in dataclasses.fields(DeviceParams) if f.name != "device")


def make_params(device: str = "stt-pma", **overrides) -> DeviceParams:
    """DeviceParams of ``device`` ("stt-pma" or "sot-pma") with defaults replaced by ``overrides``.

    Defaults: Ms 1e6 A/m, t 1.4 nm, d 40 nm, Ku such that mu0 Hk_eff = 0.2 T, alpha 0.01,
    eta 0.6, RA 5 Ohm um^2, TMR 100 %; sot-pma adds theta_SH 0.3, a 4 nm x 50 nm x 100 nm
    beta-W strip (2e-6 Ohm m) and a 16 kA/m bias field along +x (see the module docstring
    for what that does and does not make deterministic).
    """
    if device not in DEVICE_DEFAULTS:
        raise ParameterError("device", f"unknown device {device!r} (expected one of {', '.join(DEVICES)})")
    values = dict(DEVICE_DEFAULTS[device])
    for name, value in overrides.items():
        if name not in values:
            raise ParameterError(name, f"unknown parameter (expected one of {', '.join(PARAMETER_NAMES)})")
        values[name] = value
    return DeviceParams(device=device, **values)
