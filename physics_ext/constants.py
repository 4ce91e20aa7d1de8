"""Physical constants, CODATA 2018 (SI). The only place the package takes them from."""

ELECTRON_GYROMAGNETIC_RATIO = 1.76085963023e11
"""|gamma_e| [rad/(s T)]."""

VACUUM_PERMEABILITY = 1.25663706212e-6
"""mu0 [N/A^2 = T m/A]."""

REDUCED_PLANCK = 1.054571817e-34
"""hbar [J s] (exact since 2019: h / 2pi with h = 6.62607015e-34)."""

ELEMENTARY_CHARGE = 1.602176634e-19
"""e [C] (exact)."""

BOLTZMANN = 1.380649e-23
"""k_B [J/K] (exact)."""

GAMMA = ELECTRON_GYROMAGNETIC_RATIO
MU0 = VACUUM_PERMEABILITY
HBAR = REDUCED_PLANCK
E_CHARGE = ELEMENTARY_CHARGE
KB = BOLTZMANN
