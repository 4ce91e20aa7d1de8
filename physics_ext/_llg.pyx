# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled macrospin LLGS core: RK4, stochastic Heun and Dormand-Prince 5(4) in plain C doubles.

Equation (Landau-Lifshitz form, |m| = 1, fields in A/m):

    dm/dt = -gamma_LL [ m x A + m x (m x B) ],   gamma_LL = gamma mu0 / (1 + alpha^2)
    A = H + (beta - alpha) H_DL p,   B = alpha H + (1 + alpha beta) H_DL p

with H = H_applied + Hk_eff mz z + H_thermal, H_DL = (damping-like field per J) * J and
beta the field-like ratio (H_FL = beta H_DL). This is the Gilbert equation with Slonczewski
damping-like torque -gamma mu0 H_DL m x (m x p) and field-like torque -gamma mu0 H_FL m x p,
solved for dm/dt. The demag field -Nx Ms m (Nx = Ny) is parallel to m and has no torque.

Every run is one C function over a packed parameter row, so the batched path (OpenMP prange
over devices, no GIL) runs exactly the same instructions as the single path: identical bits.
Random numbers: xoshiro256** seeded by splitmix64(seed), normals by a 256-layer ziggurat.
"""
from cython.parallel cimport prange, parallel
from libc.math cimport sqrt, log, exp, fabs, NAN, isnan
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport malloc, free
cimport openmp

import numpy as np


cdef extern from *:
    """
    #define STGYM_UNLIKELY(x) __builtin_expect(!!(x), 0)
    #include <stdint.h>
    #include <math.h>
    /* the lock-step lane kernel in two builds picked at load time by the CPU (ifunc): AVX2 where
       the CPU has it, else the baseline; AVX2 without FMA (and -ffp-contract=off) rounds every
       operation as the baseline does, so the bits do not depend on the build */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define STGYM_CLONED_VOID __attribute__((target_clones("avx2", "default"))) void
    #else
    #define STGYM_CLONED_VOID void
    #endif
    /* (bits >> 11) 2^-52 - 1, exactly as the double arithmetic gives it: 1.f - 2 for bit 63
       clear, 1.f - 1 for bit 63 set (f: bits 11..62), both exact (Sterbenz) */
    static inline double stgym_zig_u(uint64_t bits) {
        union { uint64_t i; double d; } f, c;
        f.i = ((bits >> 11) & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL;
        c.i = 0x4000000000000000ULL - ((bits >> 63) << 52);
        return f.d - c.d;
    }
    /* lock-step lanes (loops the compiler vectorises): one xoshiro256** output per lane, the
       state as four rows s0..s3 of n lanes (x 5 and x 9 written as shifts and adds) */
    static inline void stgym_xoshiro_lanes(uint64_t *restrict s0, uint64_t *restrict s1,
                                           uint64_t *restrict s2, uint64_t *restrict s3,
                                           uint64_t *restrict bits, int n) {
        #pragma GCC unroll 1
        for (int j = 0; j < n; j++) {
            uint64_t a = s0[j], b = s1[j], c = s2[j], d = s3[j];
            uint64_t r = (b << 2) + b;
            r = (r << 7) | (r >> 57);
            bits[j] = (r << 3) + r;
            uint64_t t = b << 17;
            c ^= a; d ^= b; b ^= c; a ^= d; c ^= t;
            d = (d << 45) | (d >> 19);
            s0[j] = a; s1[j] = b; s2[j] = c; s3[j] = d;
        }
    }
    /* the ziggurat's rectangle test per lane: out[j] = u x[layer], missed[j] = 1 where the lane
       missed the rectangles; nonzero if any lane did */
    static inline int64_t stgym_zig_lanes(const double *restrict zx, const uint64_t *restrict bits,
                                          double *restrict out, int64_t *restrict missed, int n) {
        int64_t any = 0;
        #pragma GCC unroll 1
        for (int j = 0; j < n; j++) {
            uint64_t layer = bits[j] & 0xFF;
            double x = stgym_zig_u(bits[j]) * zx[layer];
            int64_t miss = !(fabs(x) < zx[layer + 1]);
            out[j] = x;
            missed[j] = miss;
            any |= miss;
        }
        return any;
    }
    /* 2^-52, the Dormand-Prince 5(4) tableau, its error weights E (5th - 4th order) and its
       dense-output weights D (Hairer, Norsett & Wanner, DOPRI5) */
    static const double TWO_M52 = 2.220446049250313e-16;
    static const double TWO_M53 = 1.1102230246251565e-16;
    static const double A21 = 1.0 / 5.0;
    static const double A31 = 3.0 / 40.0;
    static const double A32 = 9.0 / 40.0;
    static const double A41 = 44.0 / 45.0;
    static const double A42 = -56.0 / 15.0;
    static const double A43 = 32.0 / 9.0;
    static const double A51 = 19372.0 / 6561.0;
    static const double A52 = -25360.0 / 2187.0;
    static const double A53 = 64448.0 / 6561.0;
    static const double A54 = -212.0 / 729.0;
    static const double A61 = 9017.0 / 3168.0;
    static const double A62 = -355.0 / 33.0;
    static const double A63 = 46732.0 / 5247.0;
    static const double A64 = 49.0 / 176.0;
    static const double A65 = -5103.0 / 18656.0;
    static const double A71 = 35.0 / 384.0;
    static const double A73 = 500.0 / 1113.0;
    static const double A74 = 125.0 / 192.0;
    static const double A75 = -2187.0 / 6784.0;
    static const double A76 = 11.0 / 84.0;
    static const double E1 = 71.0 / 57600.0;
    static const double E3 = -71.0 / 16695.0;
    static const double E4 = 71.0 / 1920.0;
    static const double E5 = -17253.0 / 339200.0;
    static const double E6 = 22.0 / 525.0;
    static const double E7 = -1.0 / 40.0;
    static const double D1 = -12715105075.0 / 11282082432.0;
    static const double D3 = 87487479700.0 / 32700410799.0;
    static const double D4 = -10690763975.0 / 1880347072.0;
    static const double D5 = 701980252875.0 / 199316789632.0;
    static const double D6 = -1453857185.0 / 822651844.0;
    static const double D7 = 69997945.0 / 29380423.0;
    """
    bint unlikely "STGYM_UNLIKELY"(bint) nogil
    double stgym_zig_u(uint64_t bits) nogil
    void stgym_xoshiro_lanes(uint64_t* s0, uint64_t* s1, uint64_t* s2, uint64_t* s3,
                             uint64_t* bits, int n) nogil
    int64_t stgym_zig_lanes(const double* zx, const uint64_t* bits, double* out, int64_t* missed,
                            int n) nogil
    ctypedef void cloned_void "STGYM_CLONED_VOID"
    const double TWO_M52, TWO_M53, A21, A31, A32, A41, A42, A43, A51, A52, A53
    const double A54, A61, A62, A63, A64, A65, A71, A73, A74, A75
    const double A76, E1, E3, E4, E5, E6, E7, D1, D3, D4
    const double D5, D6, D7


# ---------------------------------------------------------------------------------------------
# random numbers
# ---------------------------------------------------------------------------------------------
cdef inline uint64_t rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void rng_seed(Rng* rng, uint64_t seed) noexcept nogil:
    cdef uint64_t state = seed
    rng.s0 = splitmix64(&state)
    rng.s1 = splitmix64(&state)
    rng.s2 = splitmix64(&state)
    rng.s3 = splitmix64(&state)


cdef inline uint64_t rng_next(Rng* rng) noexcept nogil:
    cdef uint64_t result = rotl(rng.s1 * 5, 7) * 9
    cdef uint64_t t = rng.s1 << 17
    rng.s2 ^= rng.s0
    rng.s3 ^= rng.s1
    rng.s1 ^= rng.s2
    rng.s0 ^= rng.s3
    rng.s2 ^= t
    rng.s3 = rotl(rng.s3, 45)
    return result


# Ziggurat tables for the standard normal (Marsaglia & Tsang 2000, 256 layers of area ZIG_V
# under exp(-x^2/2)): layer i spans |x| < ZIG_X[i], between heights ZIG_F[i] and ZIG_F[i+1].
cdef double ZIG_X[257]
cdef double ZIG_F[257]
cdef double ZIG_R = 3.6541528853610088
cdef double ZIG_V = 0.00492867323399


cdef void ziggurat_init() noexcept nogil:
    cdef int i
    ZIG_X[1] = ZIG_R
    ZIG_F[1] = exp(-0.5 * ZIG_R * ZIG_R)
    ZIG_X[0] = ZIG_V / ZIG_F[1]
    ZIG_F[0] = 0.0
    for i in range(1, 255):
        ZIG_X[i + 1] = sqrt(-2.0 * log(ZIG_V / ZIG_X[i] + ZIG_F[i]))
        ZIG_F[i + 1] = exp(-0.5 * ZIG_X[i + 1] * ZIG_X[i + 1])
    ZIG_X[256] = 0.0
    ZIG_F[256] = 1.0


ziggurat_init()


cdef inline double rng_open01(Rng* rng) noexcept nogil:
    return (<double>(rng_next(rng) >> 11) + 0.5) * TWO_M53


cdef double rng_normal_slow(Rng* rng, int layer, double x, double u) noexcept nogil:
    """The rare ziggurat cases: the tail beyond ZIG_R (layer 0) or a wedge (Marsaglia 1964)."""
    cdef double tx, ty
    if layer == 0:
        while True:
            tx = log(rng_open01(rng)) / ZIG_R
            ty = log(rng_open01(rng))
            if -2.0 * ty >= tx * tx:
                return tx - ZIG_R if u < 0.0 else ZIG_R - tx
    if ZIG_F[layer] + (ZIG_F[layer + 1] - ZIG_F[layer]) * rng_open01(rng) < exp(-0.5 * x * x):
        return x
    return NAN  # rejected: draw again


cdef double rng_normal_reject(Rng* rng, int layer, double x, double u) noexcept nogil:
    """The rest of rng_normal after a first 64-bit number that missed the ziggurat's rectangles."""
    cdef uint64_t bits
    while True:
        x = rng_normal_slow(rng, layer, x, u)
        if not isnan(x):
            return x
        bits = rng_next(rng)
        layer = <int>(bits & 0xFF)
        u = zig_u(bits)
        x = u * ZIG_X[layer]
        if fabs(x) < ZIG_X[layer + 1]:
            return x


cdef inline double zig_u(uint64_t bits) noexcept nogil:
    """(bits >> 11) 2^-52 - 1 in [-1, 1), exactly, by integer operations only (vectorisable)."""
    return stgym_zig_u(bits)


cdef double rng_normal(Rng* rng) noexcept nogil:
    """One standard normal: ziggurat, 98.8 % of draws cost one 64-bit number and a compare."""
    return rng_normal_fast(rng)


cdef inline double rng_normal_fast(Rng* rng) noexcept nogil:
    """rng_normal with its common case inline; the rare rest out of line."""
    cdef uint64_t bits = rng_next(rng)
    cdef int layer = <int>(bits & 0xFF)
    cdef double u = zig_u(bits)
    cdef double x = u * ZIG_X[layer]
    if fabs(x) < ZIG_X[layer + 1]:
        return x
    return rng_normal_reject(rng, layer, x, u)


# ---------------------------------------------------------------------------------------------
# right-hand side
# ---------------------------------------------------------------------------------------------
cdef inline void torque_setup(const double* par, double current_density, Torque* q) noexcept nogil:
    """Constant parts of A and B for one current value, premultiplied by -gamma_LL."""
    cdef double g = -par[P_GAMMA_LL]
    cdef double alpha = par[P_ALPHA]
    cdef double beta = par[P_BETA]
    cdef double h_dl = par[P_HDL_PER_J] * current_density
    cdef double ca = (beta - alpha) * h_dl
    cdef double cb = (1.0 + alpha * beta) * h_dl
    cdef double current = current_density * par[P_AREA]
    q.ax = g * (par[P_HX] + ca * par[P_PX])
    q.ay = g * (par[P_HY] + ca * par[P_PY])
    q.az = g * (par[P_HZ] + ca * par[P_PZ])
    q.bx = g * (alpha * par[P_HX] + cb * par[P_PX])
    q.by = g * (alpha * par[P_HY] + cb * par[P_PY])
    q.bz = g * (alpha * par[P_HZ] + cb * par[P_PZ])
    q.kz = g * par[P_HK]
    q.kbz = g * alpha * par[P_HK]
    q.noise_a = g
    q.noise_b = g * alpha
    q.current_sq = current * current


cdef inline void rhs(double ax, double ay, double az, double bx, double by, double bz,
                     double kz, double kbz, double mx, double my, double mz,
                     double* dx, double* dy, double* dz) noexcept nogil:
    """dm/dt = m x (a + kz mz z + m x (b + kbz mz z))."""
    cdef double bzz = bz + kbz * mz
    cdef double cx = my * bzz - mz * by
    cdef double cy = mz * bx - mx * bzz
    cdef double cz = mx * by - my * bx
    cdef double sx = ax + cx
    cdef double sy = ay + cy
    cdef double sz = az + kz * mz + cz
    dx[0] = my * sz - mz * sy
    dy[0] = mz * sx - mx * sz
    dz[0] = mx * sy - my * sx


cdef inline void rk4_step(const Torque* q, double h, double* mx, double* my, double* mz) noexcept nogil:
    cdef double k1x, k1y, k1z, k2x, k2y, k2z, k3x, k3y, k3z, k4x, k4y, k4z
    cdef double x = mx[0], y = my[0], z = mz[0]
    cdef double hh = 0.5 * h, h6 = h / 6.0, nx, ny, nz, inv
    rhs(q.ax, q.ay, q.az, q.bx, q.by, q.bz, q.kz, q.kbz, x, y, z, &k1x, &k1y, &k1z)
    rhs(q.ax, q.ay, q.az, q.bx, q.by, q.bz, q.kz, q.kbz,
        x + hh * k1x, y + hh * k1y, z + hh * k1z, &k2x, &k2y, &k2z)
    rhs(q.ax, q.ay, q.az, q.bx, q.by, q.bz, q.kz, q.kbz,
        x + hh * k2x, y + hh * k2y, z + hh * k2z, &k3x, &k3y, &k3z)
    rhs(q.ax, q.ay, q.az, q.bx, q.by, q.bz, q.kz, q.kbz,
        x + h * k3x, y + h * k3y, z + h * k3z, &k4x, &k4y, &k4z)
    nx = x + h6 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
    ny = y + h6 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
    nz = z + h6 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
    inv = 1.0 / sqrt(nx * nx + ny * ny + nz * nz)
    mx[0] = nx * inv
    my[0] = ny * inv
    mz[0] = nz * inv


cdef inline void heun_step(const Torque* q, double h, double sigma, Rng* rng,
                           double* mx, double* my, double* mz) noexcept nogil:
    """Stochastic Heun (Stratonovich): one thermal field sample per step, held in both stages."""
    cdef double k1x, k1y, k1z, k2x, k2y, k2z, hx, hy, hz, nx, ny, nz, inv
    cdef double x = mx[0], y = my[0], z = mz[0]
    cdef double ax = q.ax, ay = q.ay, az = q.az, bx = q.bx, by = q.by, bz = q.bz
    cdef double hh = 0.5 * h
    if sigma > 0.0:
        hx = sigma * rng_normal_fast(rng)
        hy = sigma * rng_normal_fast(rng)
        hz = sigma * rng_normal_fast(rng)
        ax = ax + q.noise_a * hx
        ay = ay + q.noise_a * hy
        az = az + q.noise_a * hz
        bx = bx + q.noise_b * hx
        by = by + q.noise_b * hy
        bz = bz + q.noise_b * hz
    rhs(ax, ay, az, bx, by, bz, q.kz, q.kbz, x, y, z, &k1x, &k1y, &k1z)
    rhs(ax, ay, az, bx, by, bz, q.kz, q.kbz, x + h * k1x, y + h * k1y, z + h * k1z, &k2x, &k2y, &k2z)
    nx = x + hh * (k1x + k2x)
    ny = y + hh * (k1y + k2y)
    nz = z + hh * (k1z + k2z)
    inv = 1.0 / sqrt(nx * nx + ny * ny + nz * nz)
    mx[0] = nx * inv
    my[0] = ny * inv
    mz[0] = nz * inv


cdef inline double resistance(const double* par, double mx, double my, double mz) noexcept nogil:
    return 1.0 / (par[P_G0] + par[P_G1] * (mx * par[P_RX] + my * par[P_RY] + mz * par[P_RZ]))


# ---------------------------------------------------------------------------------------------
# fixed-step integration (RK4, Heun): the one code path of single and batched runs
# ---------------------------------------------------------------------------------------------
cdef int integrate_fixed(const double* par, const double* current, const double* seg_len,
                         Py_ssize_t n_seg, double dt, int method, uint64_t seed,
                         double stop_mz, double* m, RunResult* res,
                         double* trace_t, double* trace_m, Py_ssize_t stride,
                         Py_ssize_t trace_cap) noexcept nogil:
    """Integrates n_seg constant-current segments (seg_len[k] s at current[k] A/m^2).

    Steps of exactly dt; a segment that is not a whole number of steps ends with one shorter
    step. Joule energy by the trapezoid rule on R(m). Stops after the step in which mz crosses
    stop_mz (NaN: never). Returns 0, or -1 if |m0| = 0.
    """
    cdef Torque q
    cdef Rng rng
    cdef double mx = m[0], my = m[1], mz = m[2], mz_prev, norm
    cdef double t_seg = 0.0, t_step, h, sigma, sigma_dt = 0.0, seg, rem
    cdef double r_prev, r_new, energy = 0.0, t_cross = NAN, t_end
    cdef long long steps = 0, n_full, n_steps, i
    cdef Py_ssize_t k, n_trace = 0
    cdef bint crossed = 0, stopped = 0, use_stop = not isnan(stop_mz), joule, heun = method == METHOD_HEUN
    norm = sqrt(mx * mx + my * my + mz * mz)
    if not norm > 0.0:
        return -1
    mx = mx / norm
    my = my / norm
    mz = mz / norm
    rng_seed(&rng, seed)
    if heun:
        sigma_dt = par[P_NOISE] / sqrt(dt)
    if trace_cap > 0:
        trace_t[0] = 0.0
        trace_m[0] = mx
        trace_m[1] = my
        trace_m[2] = mz
        n_trace = 1
    t_end = 0.0
    for k in range(n_seg):
        torque_setup(par, current[k], &q)
        joule = q.current_sq != 0.0
        r_prev = resistance(par, mx, my, mz)
        seg = seg_len[k]
        n_full = <long long>(seg / dt + 1e-9)
        rem = seg - n_full * dt
        n_steps = n_full + (1 if rem > 1e-9 * dt else 0)
        for i in range(n_steps):
            h = dt
            sigma = sigma_dt
            if unlikely(i == n_full):
                h = rem
                if heun:
                    sigma = par[P_NOISE] / sqrt(rem)
            t_step = t_seg + i * dt
            mz_prev = mz
            if heun:
                heun_step(&q, h, sigma, &rng, &mx, &my, &mz)
            else:
                rk4_step(&q, h, &mx, &my, &mz)
            if joule:
                r_new = resistance(par, mx, my, mz)
                energy += q.current_sq * 0.5 * (r_prev + r_new) * h
                r_prev = r_new
            steps += 1
            if unlikely(not crossed and (mz_prev < 0.0) != (mz < 0.0)):
                crossed = 1
                t_cross = t_step + h * mz_prev / (mz_prev - mz)
            if unlikely(trace_cap > 0 and steps % stride == 0 and n_trace < trace_cap):
                trace_t[n_trace] = t_seg + seg if i == n_steps - 1 else t_step + h
                trace_m[3 * n_trace] = mx
                trace_m[3 * n_trace + 1] = my
                trace_m[3 * n_trace + 2] = mz
                n_trace += 1
            if unlikely(use_stop and (mz_prev < stop_mz) != (mz < stop_mz)):
                stopped = 1
                t_end = t_seg + seg if i == n_steps - 1 else t_step + h
                break
        if stopped:
            break
        t_seg += seg
        t_end = t_seg
    if trace_cap > 0 and n_trace < trace_cap and trace_t[n_trace - 1] != t_end:
        trace_t[n_trace] = t_end
        trace_m[3 * n_trace] = mx
        trace_m[3 * n_trace + 1] = my
        trace_m[3 * n_trace + 2] = mz
        n_trace += 1
    m[0] = mx
    m[1] = my
    m[2] = mz
    res.t_cross = t_cross
    res.t_end = t_end
    res.energy = energy
    res.steps = steps
    res.n_trace = n_trace
    res.stopped = stopped
    return 0


# ---------------------------------------------------------------------------------------------
# adaptive Dormand-Prince 5(4) with dense output and event location
# ---------------------------------------------------------------------------------------------


cdef inline void dp_rhs(const Torque* q, const double* par, const double* y, double* dy) noexcept nogil:
    """Magnetization and Joule power: y = (mx, my, mz, energy)."""
    rhs(q.ax, q.ay, q.az, q.bx, q.by, q.bz, q.kz, q.kbz, y[0], y[1], y[2], &dy[0], &dy[1], &dy[2])
    dy[3] = q.current_sq * resistance(par, y[0], y[1], y[2])


cdef inline double dense(const double* r, int i, double theta) noexcept nogil:
    """Component i of the 4th-order continuous extension at theta in [0, 1]."""
    cdef double u = 1.0 - theta
    return r[i] + theta * (r[4 + i] + u * (r[8 + i] + theta * (r[12 + i] + u * r[16 + i])))


cdef double locate(const double* r, double level) noexcept nogil:
    """theta in [0, 1] where the dense mz equals level (it is bracketed): Illinois regula falsi."""
    cdef double a = 0.0, b = 1.0, fa = dense(r, 2, 0.0) - level, fb = dense(r, 2, 1.0) - level
    cdef double c, fc
    cdef int side = 0, it
    if fa == 0.0:
        return 0.0
    for it in range(100):
        c = (a * fb - b * fa) / (fb - fa)
        fc = dense(r, 2, c) - level
        if fc == 0.0 or b - a < 1e-15:
            return c
        if (fc < 0.0) == (fb < 0.0):
            b = c
            fb = fc
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a = c
            fa = fc
            if side == 1:
                fb *= 0.5
            side = 1
    return c


cdef inline void emit(double* trace_t, double* trace_m, Py_ssize_t n, double t,
                      double x, double y, double z) noexcept nogil:
    cdef double inv = 1.0 / sqrt(x * x + y * y + z * z)
    trace_t[n] = t
    trace_m[3 * n] = x * inv
    trace_m[3 * n + 1] = y * inv
    trace_m[3 * n + 2] = z * inv


cdef int integrate_dp45(const double* par, const double* current, const double* seg_len,
                        Py_ssize_t n_seg, double dt, double rtol, double atol,
                        double stop_mz, double* m, RunResult* res,
                        double* trace_t, double* trace_m, Py_ssize_t trace_cap) noexcept nogil:
    """Adaptive DP5(4) (local extrapolation, FSAL error estimate, |m| renormalised after each
    accepted step). dt: first step and trace interval (the trace is dense output on the grid
    k dt). Events located on the dense output: first mz sign change and the stop_mz crossing
    (where the run ends, m taken from the dense output). Returns 0, -1 (|m0| = 0) or -2
    (step size underflow)."""
    cdef Torque q
    cdef double y0[4]
    cdef double y1[4]
    cdef double ys[4]
    cdef double k1[4]
    cdef double k2[4]
    cdef double k3[4]
    cdef double k4[4]
    cdef double k5[4]
    cdef double k6[4]
    cdef double k7[4]
    cdef double r[20]
    cdef double norm, h = dt, t_seg = 0.0, tl, seg, err, sc, e, fac, theta, t_cross = NAN, t_end = 0.0
    cdef double t_grid
    cdef long long steps = 0
    cdef Py_ssize_t k, n_trace = 0, n_grid = 1
    cdef int i, j, last
    cdef bint crossed = 0, stopped = 0, use_stop = not isnan(stop_mz), rejected
    norm = sqrt(m[0] * m[0] + m[1] * m[1] + m[2] * m[2])
    if not norm > 0.0:
        return -1
    y0[0] = m[0] / norm
    y0[1] = m[1] / norm
    y0[2] = m[2] / norm
    y0[3] = 0.0
    if trace_cap > 0:
        emit(trace_t, trace_m, 0, 0.0, y0[0], y0[1], y0[2])
        n_trace = 1
    for k in range(n_seg):
        torque_setup(par, current[k], &q)
        seg = seg_len[k]
        tl = 0.0
        rejected = 0
        dp_rhs(&q, par, y0, k1)
        while tl < seg:
            last = 0
            if tl + h >= seg * (1.0 - 1e-13):
                h = seg - tl
                last = 1
            if h <= 1e-16 * (t_seg + tl) or h <= 0.0:
                return -2
            for i in range(4):
                ys[i] = y0[i] + h * A21 * k1[i]
            dp_rhs(&q, par, ys, k2)
            for i in range(4):
                ys[i] = y0[i] + h * (A31 * k1[i] + A32 * k2[i])
            dp_rhs(&q, par, ys, k3)
            for i in range(4):
                ys[i] = y0[i] + h * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i])
            dp_rhs(&q, par, ys, k4)
            for i in range(4):
                ys[i] = y0[i] + h * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i])
            dp_rhs(&q, par, ys, k5)
            for i in range(4):
                ys[i] = y0[i] + h * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i] + A65 * k5[i])
            dp_rhs(&q, par, ys, k6)
            for i in range(4):
                y1[i] = y0[i] + h * (A71 * k1[i] + A73 * k3[i] + A74 * k4[i] + A75 * k5[i] + A76 * k6[i])
            dp_rhs(&q, par, y1, k7)
            err = 0.0
            for i in range(3):
                e = h * (E1 * k1[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i] + E6 * k6[i] + E7 * k7[i])
                sc = atol + rtol * (fabs(y0[i]) if fabs(y0[i]) > fabs(y1[i]) else fabs(y1[i]))
                err += (e / sc) * (e / sc)
            err = sqrt(err / 3.0)
            if err > 1.0:
                fac = 0.9 * err ** -0.2
                h *= fac if fac > 0.2 else 0.2
                rejected = 1
                continue
            steps += 1
            for i in range(4):
                r[i] = y0[i]
                r[4 + i] = y1[i] - y0[i]
                r[8 + i] = h * k1[i] - r[4 + i]
                r[12 + i] = r[4 + i] - h * k7[i] - r[8 + i]
                r[16 + i] = h * (D1 * k1[i] + D3 * k3[i] + D4 * k4[i] + D5 * k5[i] + D6 * k6[i] + D7 * k7[i])
            if not crossed and (y0[2] < 0.0) != (y1[2] < 0.0):
                crossed = 1
                t_cross = t_seg + tl + h * locate(r, 0.0)
            theta = 2.0
            if use_stop and (y0[2] < stop_mz) != (y1[2] < stop_mz):
                theta = locate(r, stop_mz)
                stopped = 1
            if trace_cap > 0:
                t_grid = n_grid * dt
                while n_trace < trace_cap and t_grid <= t_seg + tl + h * (theta if theta < 1.0 else 1.0) * (1.0 + 1e-12):
                    e = (t_grid - t_seg - tl) / h
                    emit(trace_t, trace_m, n_trace, t_grid, dense(r, 0, e), dense(r, 1, e), dense(r, 2, e))
                    n_trace += 1
                    n_grid += 1
                    t_grid = n_grid * dt
            if stopped:
                for i in range(4):
                    y1[i] = dense(r, i, theta)
                t_end = t_seg + tl + h * theta
                if trace_cap > 0 and n_trace < trace_cap:
                    emit(trace_t, trace_m, n_trace, t_end, y1[0], y1[1], y1[2])
                    n_trace += 1
            norm = sqrt(y1[0] * y1[0] + y1[1] * y1[1] + y1[2] * y1[2])
            y0[0] = y1[0] / norm
            y0[1] = y1[1] / norm
            y0[2] = y1[2] / norm
            y0[3] = y1[3]
            if stopped:
                break
            tl = seg if last else tl + h
            dp_rhs(&q, par, y0, k1)
            fac = 0.9 * err ** -0.2 if err > 0.0 else 5.0
            if fac > 5.0:
                fac = 5.0
            if fac < 0.2:
                fac = 0.2
            if rejected and fac > 1.0:
                fac = 1.0
            rejected = 0
            if not last:
                h *= fac
            else:
                h = h * fac if h * fac > dt else dt
        if stopped:
            break
        t_seg += seg
        t_end = t_seg
    if trace_cap > 0 and n_trace < trace_cap and trace_t[n_trace - 1] < t_end * (1.0 - 1e-12):
        emit(trace_t, trace_m, n_trace, t_end, y0[0], y0[1], y0[2])
        n_trace += 1
    m[0] = y0[0]
    m[1] = y0[1]
    m[2] = y0[2]
    res.t_cross = t_cross
    res.t_end = t_end
    res.energy = y0[3]
    res.steps = steps
    res.n_trace = n_trace
    res.stopped = stopped
    return 0


# ---------------------------------------------------------------------------------------------
# Python entry points (arrays validated and packed by physics_ext.simulation)
# ---------------------------------------------------------------------------------------------
def max_threads():
    """OpenMP's default number of threads."""
    return openmp.omp_get_max_threads()


def _result(RunResult res, int rc):
    return rc, res.t_cross, res.t_end, res.energy, res.steps, res.n_trace, bool(res.stopped)


def run_fixed(const double[::1] par, double[::1] m, const double[::1] current,
              const double[::1] seg_len, double dt, int method, uint64_t seed, double stop_mz,
              Py_ssize_t stride, double[::1] trace_t, double[:, ::1] trace_m):
    """One device, RK4 or Heun; m (3,) is overwritten by the final state."""
    cdef RunResult res
    cdef int rc
    cdef Py_ssize_t cap = trace_t.shape[0]
    cdef double* tt = &trace_t[0] if cap > 0 else NULL
    cdef double* tm = &trace_m[0, 0] if cap > 0 else NULL
    with nogil:
        rc = integrate_fixed(&par[0], &current[0], &seg_len[0], current.shape[0], dt, method,
                             seed, stop_mz, &m[0], &res, tt, tm, stride, cap)
    return _result(res, rc)


def run_dp45(const double[::1] par, double[::1] m, const double[::1] current,
             const double[::1] seg_len, double dt, double rtol, double atol, double stop_mz,
             double[::1] trace_t, double[:, ::1] trace_m):
    """One device, adaptive DP45; m (3,) is overwritten by the final state."""
    cdef RunResult res
    cdef int rc
    cdef Py_ssize_t cap = trace_t.shape[0]
    cdef double* tt = &trace_t[0] if cap > 0 else NULL
    cdef double* tm = &trace_m[0, 0] if cap > 0 else NULL
    with nogil:
        rc = integrate_dp45(&par[0], &current[0], &seg_len[0], current.shape[0], dt, rtol, atol,
                            stop_mz, &m[0], &res, tt, tm, cap)
    return _result(res, rc)


def run_interval(const double[::1] par, double[::1] m, double current_density, double duration,
                 double dt, int method, uint64_t seed):
    """The lean path of one control interval: constant current for ``duration`` s, no trace,
    no stop event, arguments trusted (par from pack(), m (3,) finite and nonzero, dt and
    duration > 0). m is overwritten by the final state; the bits equal run_fixed's with one
    segment. Returns (t_cross, energy, steps); t_cross is NaN if mz kept its sign."""
    cdef RunResult res
    with nogil:
        integrate_fixed(&par[0], &current_density, &duration, 1, dt, method, seed, NAN, &m[0],
                        &res, NULL, NULL, 1, 0)
    return res.t_cross, res.energy, res.steps


# ---------------------------------------------------------------------------------------------
# the batched path: LANES devices in lock step (the same expressions as integrate_fixed, lane by
# lane, so every device gets exactly its single-run bits; independent chains fill the pipeline)
# ---------------------------------------------------------------------------------------------
# LANES (devices in lock step) is declared in _llg.pxd, for the modules that call run_lanes.


cdef inline void lanes_draw(uint64_t* rs, double* out) noexcept nogil:
    """Three standard normals per lane (out[c LANES + j], c = 0, 1, 2): rng_normal three times on
    each lane's own stream, so each lane draws exactly its single-run sequence. xoshiro256** and
    the ziggurat's rectangle test run for all lanes at once (state as LANES-wide rows s0, s1, s2,
    s3 of rs); a rejection is finished out of line for its lane before the next component."""
    cdef uint64_t bits[LANES]
    cdef int64_t missed[LANES]
    cdef Py_ssize_t j, c
    for c in range(3):
        stgym_xoshiro_lanes(rs, &rs[LANES], &rs[2 * LANES], &rs[3 * LANES], bits, LANES)
        if unlikely(stgym_zig_lanes(ZIG_X, bits, &out[c * LANES], missed, LANES)):
            for j in range(LANES):
                if missed[j]:
                    out[c * LANES + j] = lane_reject(rs, j, <int>(bits[j] & 0xFF), out[c * LANES + j],
                                                     zig_u(bits[j]))


cdef double lane_reject(uint64_t* rs, Py_ssize_t j, int layer, double x, double u) noexcept nogil:
    cdef Rng rng
    rng.s0 = rs[j]
    rng.s1 = rs[LANES + j]
    rng.s2 = rs[2 * LANES + j]
    rng.s3 = rs[3 * LANES + j]
    x = rng_normal_reject(&rng, layer, x, u)
    rs[j] = rng.s0
    rs[LANES + j] = rng.s1
    rs[2 * LANES + j] = rng.s2
    rs[3 * LANES + j] = rng.s3
    return x


cdef double lane_normal(uint64_t* rs, Py_ssize_t j) noexcept nogil:
    cdef Rng rng
    cdef double x
    rng.s0 = rs[j]
    rng.s1 = rs[LANES + j]
    rng.s2 = rs[2 * LANES + j]
    rng.s3 = rs[3 * LANES + j]
    x = rng_normal(&rng)
    rs[j] = rng.s0
    rs[LANES + j] = rng.s1
    rs[2 * LANES + j] = rng.s2
    rs[3 * LANES + j] = rng.s3
    return x


cdef cloned_void integrate_lanes(const double* par, const double* current, const double* seg_len,
                          Py_ssize_t n_seg, double dt, int method, const uint64_t* seeds,
                          double stop_mz, double* m, double* t_cross, double* energy,
                          int64_t* steps, double* t_end) noexcept nogil:
    """LANES consecutive devices of a batch (rows of par, current, m), sharing segment lengths.

    Each step is a few loops over the lanes with no calls and no branches inside (the compiler
    vectorises them); the thermal draws come first, component by component for all lanes.
    Lanes with and without noise in one group (per-device temperatures) take the general loop.
    """
    cdef Torque q
    cdef Rng rng
    cdef uint64_t rs[4 * LANES]
    cdef double ax[LANES]
    cdef double ay[LANES]
    cdef double az[LANES]
    cdef double bx[LANES]
    cdef double by[LANES]
    cdef double bz[LANES]
    cdef double kz[LANES]
    cdef double kbz[LANES]
    cdef double na[LANES]
    cdef double nb[LANES]
    cdef double isq[LANES]
    cdef double g0[LANES]
    cdef double g1[LANES]
    cdef double rx[LANES]
    cdef double ry[LANES]
    cdef double rz[LANES]
    cdef double gn[3 * LANES]
    cdef double mx[LANES]
    cdef double my[LANES]
    cdef double mz[LANES]
    cdef double mzp[LANES]
    cdef double sigma_dt[LANES]
    cdef double sigma[LANES]
    cdef double r_prev[LANES]
    cdef double e[LANES]
    cdef double tc[LANES]
    cdef double te[LANES]
    cdef double fm[3 * LANES]
    cdef long long done[LANES]
    cdef bint crossed[LANES]
    cdef bint stopped[LANES]
    cdef double t_seg = 0.0, t_step, h, hh, h6, seg, rem, norm, inv, r_new, hx, hy, hz
    cdef double sax[LANES]
    cdef double say[LANES]
    cdef double saz[LANES]
    cdef double sbx[LANES]
    cdef double sby[LANES]
    cdef double sbz[LANES]
    cdef double k1x[LANES]
    cdef double k1y[LANES]
    cdef double k1z[LANES]
    cdef double k2x[LANES]
    cdef double k2y[LANES]
    cdef double k2z[LANES]
    cdef double k3x[LANES]
    cdef double k3y[LANES]
    cdef double k3z[LANES]
    cdef double k4x[LANES]
    cdef double k4y[LANES]
    cdef double k4z[LANES]
    cdef double nx, ny, nz
    cdef bint plain = 0
    cdef long long n_full, n_steps, i, total = 0
    cdef Py_ssize_t k, j, n_stopped = 0, n_noisy, n_joule
    cdef long flip
    cdef bint use_stop = not isnan(stop_mz), heun = method == METHOD_HEUN
    for j in range(LANES):
        norm = sqrt(m[3 * j] * m[3 * j] + m[3 * j + 1] * m[3 * j + 1] + m[3 * j + 2] * m[3 * j + 2])
        mx[j] = m[3 * j] / norm
        my[j] = m[3 * j + 1] / norm
        mz[j] = m[3 * j + 2] / norm
        rng_seed(&rng, seeds[j])
        rs[j] = rng.s0
        rs[LANES + j] = rng.s1
        rs[2 * LANES + j] = rng.s2
        rs[3 * LANES + j] = rng.s3
        sigma_dt[j] = par[j * NPAR + P_NOISE] / sqrt(dt) if heun else 0.0
        g0[j] = par[j * NPAR + P_G0]
        g1[j] = par[j * NPAR + P_G1]
        rx[j] = par[j * NPAR + P_RX]
        ry[j] = par[j * NPAR + P_RY]
        rz[j] = par[j * NPAR + P_RZ]
        e[j] = 0.0
        tc[j] = NAN
        crossed[j] = 0
        stopped[j] = 0
    for k in range(n_seg):
        n_joule = 0
        for j in range(LANES):
            torque_setup(&par[j * NPAR], current[j * n_seg + k], &q)
            ax[j] = q.ax
            ay[j] = q.ay
            az[j] = q.az
            bx[j] = q.bx
            by[j] = q.by
            bz[j] = q.bz
            kz[j] = q.kz
            kbz[j] = q.kbz
            na[j] = q.noise_a
            nb[j] = q.noise_b
            isq[j] = q.current_sq
            n_joule += q.current_sq != 0.0
            r_prev[j] = resistance(&par[j * NPAR], mx[j], my[j], mz[j])
            sigma[j] = sigma_dt[j]
        plain = 0
        seg = seg_len[k]
        n_full = <long long>(seg / dt + 1e-9)
        rem = seg - n_full * dt
        n_steps = n_full + (1 if rem > 1e-9 * dt else 0)
        h = dt
        for i in range(n_steps):
            if unlikely(i == n_full):
                h = rem
                if heun:
                    for j in range(LANES):
                        sigma[j] = par[j * NPAR + P_NOISE] / sqrt(rem)
            t_step = t_seg + i * dt
            hh = 0.5 * h
            if heun:
                n_noisy = 0
                for j in range(LANES):
                    n_noisy += sigma[j] > 0.0
                if n_noisy == LANES:
                    lanes_draw(rs, gn)
                    for j in range(LANES):
                        hx = sigma[j] * gn[j]
                        hy = sigma[j] * gn[LANES + j]
                        hz = sigma[j] * gn[2 * LANES + j]
                        sax[j] = ax[j] + na[j] * hx
                        say[j] = ay[j] + na[j] * hy
                        saz[j] = az[j] + na[j] * hz
                        sbx[j] = bx[j] + nb[j] * hx
                        sby[j] = by[j] + nb[j] * hy
                        sbz[j] = bz[j] + nb[j] * hz
                    plain = 0
                elif n_noisy > 0:  # mixed: lanes without noise draw nothing and add nothing
                    for j in range(LANES):
                        sax[j] = ax[j]
                        say[j] = ay[j]
                        saz[j] = az[j]
                        sbx[j] = bx[j]
                        sby[j] = by[j]
                        sbz[j] = bz[j]
                        if sigma[j] > 0.0:
                            hx = sigma[j] * lane_normal(rs, j)
                            hy = sigma[j] * lane_normal(rs, j)
                            hz = sigma[j] * lane_normal(rs, j)
                            sax[j] = sax[j] + na[j] * hx
                            say[j] = say[j] + na[j] * hy
                            saz[j] = saz[j] + na[j] * hz
                            sbx[j] = sbx[j] + nb[j] * hx
                            sby[j] = sby[j] + nb[j] * hy
                            sbz[j] = sbz[j] + nb[j] * hz
                    plain = 0
                elif not plain:
                    for j in range(LANES):
                        sax[j] = ax[j]
                        say[j] = ay[j]
                        saz[j] = az[j]
                        sbx[j] = bx[j]
                        sby[j] = by[j]
                        sbz[j] = bz[j]
                    plain = 1
                for j in range(LANES):
                    rhs(sax[j], say[j], saz[j], sbx[j], sby[j], sbz[j], kz[j], kbz[j],
                        mx[j], my[j], mz[j], &k1x[j], &k1y[j], &k1z[j])
                for j in range(LANES):
                    rhs(sax[j], say[j], saz[j], sbx[j], sby[j], sbz[j], kz[j], kbz[j],
                        mx[j] + h * k1x[j], my[j] + h * k1y[j], mz[j] + h * k1z[j], &k2x[j], &k2y[j], &k2z[j])
                for j in range(LANES):
                    nx = mx[j] + hh * (k1x[j] + k2x[j])
                    ny = my[j] + hh * (k1y[j] + k2y[j])
                    nz = mz[j] + hh * (k1z[j] + k2z[j])
                    inv = 1.0 / sqrt(nx * nx + ny * ny + nz * nz)
                    mzp[j] = mz[j]
                    mx[j] = nx * inv
                    my[j] = ny * inv
                    mz[j] = nz * inv
            else:
                h6 = h / 6.0
                for j in range(LANES):
                    rhs(ax[j], ay[j], az[j], bx[j], by[j], bz[j], kz[j], kbz[j],
                        mx[j], my[j], mz[j], &k1x[j], &k1y[j], &k1z[j])
                for j in range(LANES):
                    rhs(ax[j], ay[j], az[j], bx[j], by[j], bz[j], kz[j], kbz[j],
                        mx[j] + hh * k1x[j], my[j] + hh * k1y[j], mz[j] + hh * k1z[j],
                        &k2x[j], &k2y[j], &k2z[j])
                for j in range(LANES):
                    rhs(ax[j], ay[j], az[j], bx[j], by[j], bz[j], kz[j], kbz[j],
                        mx[j] + hh * k2x[j], my[j] + hh * k2y[j], mz[j] + hh * k2z[j],
                        &k3x[j], &k3y[j], &k3z[j])
                for j in range(LANES):
                    rhs(ax[j], ay[j], az[j], bx[j], by[j], bz[j], kz[j], kbz[j],
                        mx[j] + h * k3x[j], my[j] + h * k3y[j], mz[j] + h * k3z[j],
                        &k4x[j], &k4y[j], &k4z[j])
                for j in range(LANES):
                    nx = mx[j] + h6 * (k1x[j] + 2.0 * k2x[j] + 2.0 * k3x[j] + k4x[j])
                    ny = my[j] + h6 * (k1y[j] + 2.0 * k2y[j] + 2.0 * k3y[j] + k4y[j])
                    nz = mz[j] + h6 * (k1z[j] + 2.0 * k2z[j] + 2.0 * k3z[j] + k4z[j])
                    inv = 1.0 / sqrt(nx * nx + ny * ny + nz * nz)
                    mzp[j] = mz[j]
                    mx[j] = nx * inv
                    my[j] = ny * inv
                    mz[j] = nz * inv
            if n_joule == LANES:
                for j in range(LANES):
                    r_new = 1.0 / (g0[j] + g1[j] * (mx[j] * rx[j] + my[j] * ry[j] + mz[j] * rz[j]))
                    e[j] += isq[j] * 0.5 * (r_prev[j] + r_new) * h
                    r_prev[j] = r_new
            elif n_joule > 0:
                for j in range(LANES):
                    if isq[j] != 0.0:
                        r_new = 1.0 / (g0[j] + g1[j] * (mx[j] * rx[j] + my[j] * ry[j] + mz[j] * rz[j]))
                        e[j] += isq[j] * 0.5 * (r_prev[j] + r_new) * h
                        r_prev[j] = r_new
            total += 1
            flip = 0
            for j in range(LANES):
                flip |= (mzp[j] < 0.0) != (mz[j] < 0.0)
            if unlikely(flip):
                for j in range(LANES):
                    if not crossed[j] and not stopped[j] and (mzp[j] < 0.0) != (mz[j] < 0.0):
                        crossed[j] = 1
                        tc[j] = t_step + h * mzp[j] / (mzp[j] - mz[j])
            if unlikely(use_stop):
                for j in range(LANES):
                    if not stopped[j] and (mzp[j] < stop_mz) != (mz[j] < stop_mz):
                        stopped[j] = 1
                        n_stopped += 1
                        te[j] = t_seg + seg if i == n_steps - 1 else t_step + h
                        done[j] = total
                        fm[3 * j] = mx[j]
                        fm[3 * j + 1] = my[j]
                        fm[3 * j + 2] = mz[j]
                        energy[j] = e[j]
                if n_stopped == LANES:
                    break
        if n_stopped == LANES:
            break
        t_seg += seg
    for j in range(LANES):
        t_cross[j] = tc[j]
        if stopped[j]:
            m[3 * j] = fm[3 * j]
            m[3 * j + 1] = fm[3 * j + 1]
            m[3 * j + 2] = fm[3 * j + 2]
            steps[j] = done[j]
            t_end[j] = te[j]
        else:
            m[3 * j] = mx[j]
            m[3 * j + 1] = my[j]
            m[3 * j + 2] = mz[j]
            steps[j] = total
            t_end[j] = t_seg
            energy[j] = e[j]


cdef void _batch_one(const double* par, double* m, const double* current, const double* seg_len,
                     Py_ssize_t n_seg, double dt, int method, uint64_t seed, double stop_mz,
                     double* t_cross, double* energy, int64_t* steps, double* t_end) noexcept nogil:
    cdef RunResult res
    if integrate_fixed(par, current, seg_len, n_seg, dt, method, seed, stop_mz, m, &res,
                       NULL, NULL, 1, 0) != 0:
        t_cross[0] = NAN
        energy[0] = NAN
        steps[0] = -1
        t_end[0] = NAN
        return
    t_cross[0] = res.t_cross
    energy[0] = res.energy
    steps[0] = res.steps
    t_end[0] = res.t_end


cdef int lanes_padded(const double* par, const double* current, const double* seg_len,
                      Py_ssize_t n_seg, double dt, int method, const uint64_t* seeds,
                      double stop_mz, double* m, double* t_cross, double* energy,
                      int64_t* steps, double* t_end, Py_ssize_t n) noexcept nogil:
    """integrate_lanes for n < LANES devices: the free lanes repeat the last device (each lane's
    bits depend on its own row only) and their results are dropped. Returns -1 if out of memory."""
    cdef double* lane_par = <double*>malloc(LANES * (NPAR + n_seg) * sizeof(double))
    cdef double* lane_current
    cdef uint64_t lane_seeds[LANES]
    cdef double lane_m[3 * LANES]
    cdef double lane_t_cross[LANES]
    cdef double lane_energy[LANES]
    cdef double lane_t_end[LANES]
    cdef int64_t lane_steps[LANES]
    cdef Py_ssize_t j, src, c
    if lane_par == NULL:
        return -1
    lane_current = lane_par + LANES * NPAR
    for j in range(LANES):
        src = j if j < n else n - 1
        for c in range(NPAR):
            lane_par[j * NPAR + c] = par[src * NPAR + c]
        for c in range(n_seg):
            lane_current[j * n_seg + c] = current[src * n_seg + c]
        for c in range(3):
            lane_m[3 * j + c] = m[3 * src + c]
        lane_seeds[j] = seeds[src]
    integrate_lanes(lane_par, lane_current, seg_len, n_seg, dt, method, lane_seeds, stop_mz,
                    lane_m, lane_t_cross, lane_energy, lane_steps, lane_t_end)
    for j in range(n):
        for c in range(3):
            m[3 * j + c] = lane_m[3 * j + c]
        t_cross[j] = lane_t_cross[j]
        energy[j] = lane_energy[j]
        steps[j] = lane_steps[j]
        t_end[j] = lane_t_end[j]
    free(lane_par)
    return 0


def run_batch(const double[:, ::1] par, double[:, ::1] m, const double[:, ::1] current,
              const double[::1] seg_len, double dt, int method, const uint64_t[::1] seeds,
              double stop_mz, int threads, double[::1] t_cross, double[::1] energy,
              int64_t[::1] steps, double[::1] t_end):
    """N devices in parallel (OpenMP, no GIL); m (N,3) is overwritten by the final states.

    Devices go LANES at a time through integrate_lanes; the last N mod LANES too (lanes padded)
    when there are at least LANES / 3 of them for Heun, LANES / 6 for RK4 (fewer run faster one
    by one on the single path: a lane step costs ~1/3 of a single Heun step at 300 K, ~1/8 of
    a single RK4 step).
    """
    cdef Py_ssize_t g, i, n = m.shape[0], n_seg = current.shape[1], groups = n // LANES
    cdef Py_ssize_t rest = n - groups * LANES
    cdef Py_ssize_t padded = 1 if rest > 0 and (3 if method == METHOD_HEUN else 6) * rest >= LANES else 0
    cdef Py_ssize_t single_from = n if padded else groups * LANES
    with nogil, parallel(num_threads=threads):
        for g in prange(groups + padded, schedule="dynamic", chunksize=1):
            i = g * LANES
            if g < groups:
                integrate_lanes(&par[i, 0], &current[i, 0], &seg_len[0], n_seg, dt, method,
                                &seeds[i], stop_mz, &m[i, 0], &t_cross[i], &energy[i], &steps[i],
                                &t_end[i])
            elif lanes_padded(&par[i, 0], &current[i, 0], &seg_len[0], n_seg, dt, method,
                              &seeds[i], stop_mz, &m[i, 0], &t_cross[i], &energy[i], &steps[i],
                              &t_end[i], rest) != 0:
                for i in range(groups * LANES, n):
                    _batch_one(&par[i, 0], &m[i, 0], &current[i, 0], &seg_len[0], n_seg, dt,
                               method, seeds[i], stop_mz, &t_cross[i], &energy[i], &steps[i],
                               &t_end[i])
        for i in prange(single_from, n, schedule="static", chunksize=1):
            _batch_one(&par[i, 0], &m[i, 0], &current[i, 0], &seg_len[0], n_seg, dt, method,
                       seeds[i], stop_mz, &t_cross[i], &energy[i], &steps[i], &t_end[i])


cdef void run_lanes(const double* par, const double* current, const double* seg_len,
                    Py_ssize_t n_seg, double dt, int method, const uint64_t* seeds,
                    double stop_mz, double* m, double* t_cross, double* energy,
                    int64_t* steps, double* t_end) noexcept nogil:
    """integrate_lanes (this CPU's build of it) for other compiled modules: LANES consecutive
    devices (rows of par, current, m), the bits of integrate_fixed for each."""
    integrate_lanes(par, current, seg_len, n_seg, dt, method, seeds, stop_mz, m, t_cross,
                    energy, steps, t_end)


def normal_samples(uint64_t seed, Py_ssize_t n):
    """n standard normals from the generator every device uses (for tests)."""
    cdef Rng rng
    cdef Py_ssize_t i
    out = np.empty(n)
    cdef double[::1] view = out
    rng_seed(&rng, seed)
    for i in range(n):
        view[i] = rng_normal(&rng)
    return out
