# cython: language_level=3
"""C-level declarations of the macrospin LLGS core (see _llg.pyx)."""
from libc.stdint cimport int64_t, uint64_t

# Layout of one device's packed parameter row (float64), filled by physics_ext.simulation.pack().
cdef enum:
    P_GAMMA_LL      # gamma mu0 / (1 + alpha^2) [m/(A s)]
    P_ALPHA
    P_HK            # effective anisotropy field per mz, 2Ku/(mu0 Ms) - (Nz - Nx) Ms [A/m]
    P_HX            # applied field [A/m]
    P_HY
    P_HZ
    P_PX            # spin polarization unit vector
    P_PY
    P_PZ
    P_HDL_PER_J     # damping-like field per current density [A/m per A/m^2]
    P_BETA          # field-like / damping-like ratio
    P_NOISE         # sqrt(2 alpha kB T / (gamma mu0^2 Ms V)) [A/m sqrt(s)]
    P_G0            # conductance G(m) = g0 + g1 (m . ref) [S]
    P_G1
    P_RX            # reference direction of the conductance
    P_RY
    P_RZ
    P_AREA          # current cross-section [m^2]
    NPAR

cdef enum:
    LANES = 16      # devices the batched path integrates in lock step

cdef enum:
    METHOD_RK4 = 0
    METHOD_HEUN = 1

ctypedef struct Rng:
    uint64_t s0, s1, s2, s3

ctypedef struct Torque:
    # dm/dt = m x (a + kz mz z + m x (b + kbz mz z)); every term already times -gamma_LL.
    double ax, ay, az, bx, by, bz, kz, kbz
    double noise_a, noise_b   # -gamma_LL and -gamma_LL alpha: scale a thermal field into a, b
    double current_sq         # I^2 [A^2]

ctypedef struct RunResult:
    double t_cross            # first mz sign change [s] (NaN if none)
    double t_end              # time reached [s]
    double energy             # Joule energy [J]
    long long steps
    long long n_trace
    int stopped               # 1 if the stop_mz event ended the run

cdef void rng_seed(Rng* rng, uint64_t seed) noexcept nogil
cdef double rng_normal(Rng* rng) noexcept nogil

cdef int integrate_fixed(const double* par, const double* current, const double* seg_len,
                         Py_ssize_t n_seg, double dt, int method, uint64_t seed,
                         double stop_mz, double* m, RunResult* res,
                         double* trace_t, double* trace_m, Py_ssize_t stride,
                         Py_ssize_t trace_cap) noexcept nogil

cdef int integrate_dp45(const double* par, const double* current, const double* seg_len,
                        Py_ssize_t n_seg, double dt, double rtol, double atol,
                        double stop_mz, double* m, RunResult* res,
                        double* trace_t, double* trace_m, Py_ssize_t trace_cap) noexcept nogil

cdef void run_lanes(const double* par, const double* current, const double* seg_len,
                    Py_ssize_t n_seg, double dt, int method, const uint64_t* seeds,
                    double stop_mz, double* m, double* t_cross, double* energy,
                    int64_t* steps, double* t_end) noexcept nogil
