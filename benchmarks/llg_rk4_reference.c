/* Plain C reference for `stgym bench physics`: the same macrospin LLGS equation as
 * physics_ext, fixed-step RK4 with |m| renormalised, written the textbook way.
 *
 *   dm/dt = -g [ m x H + alpha m x (m x H) ] - g H_DL [ m x (m x p) - alpha m x p ]
 *   g = gamma mu0 / (1 + alpha^2), H = (hx, hy, hz + Hk_eff mz), p = -z
 *
 * Usage: llg_rk4_reference ALPHA HK_EFF H_DL THETA0 DT DURATION REPEATS
 *   (fields in A/m, times in s). Prints one JSON object: the best wall time of REPEATS runs.
 * Built by physics_ext/bench.py with `cc -O3` into a temporary directory.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define GAMMA 1.76085963023e11
#define MU0 1.25663706212e-6

typedef struct {
    double g, alpha, hk, h_dl;
    double p[3];
} Params;

static void cross(const double a[3], const double b[3], double out[3]) {
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

static void rhs(const Params *p, const double m[3], double dmdt[3]) {
    double h[3] = {0.0, 0.0, p->hk * m[2]};
    double mxh[3], mxmxh[3], mxp[3], mxmxp[3];
    cross(m, h, mxh);
    cross(m, mxh, mxmxh);
    cross(m, p->p, mxp);
    cross(m, mxp, mxmxp);
    for (int i = 0; i < 3; i++)
        dmdt[i] = -p->g * (mxh[i] + p->alpha * mxmxh[i]) - p->g * p->h_dl * (mxmxp[i] - p->alpha * mxp[i]);
}

static void rk4_step(const Params *p, double m[3], double dt) {
    double k1[3], k2[3], k3[3], k4[3], tmp[3];
    rhs(p, m, k1);
    for (int i = 0; i < 3; i++) tmp[i] = m[i] + 0.5 * dt * k1[i];
    rhs(p, tmp, k2);
    for (int i = 0; i < 3; i++) tmp[i] = m[i] + 0.5 * dt * k2[i];
    rhs(p, tmp, k3);
    for (int i = 0; i < 3; i++) tmp[i] = m[i] + dt * k3[i];
    rhs(p, tmp, k4);
    for (int i = 0; i < 3; i++) m[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    double norm = sqrt(m[0] * m[0] + m[1] * m[1] + m[2] * m[2]);
    for (int i = 0; i < 3; i++) m[i] /= norm;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s ALPHA HK_EFF H_DL THETA0 DT DURATION REPEATS\n", argv[0]);
        return 2;
    }
    Params p = {0};
    p.alpha = atof(argv[1]);
    p.hk = atof(argv[2]);
    p.h_dl = atof(argv[3]);
    p.g = GAMMA * MU0 / (1.0 + p.alpha * p.alpha);
    p.p[2] = -1.0;
    double theta0 = atof(argv[4]), dt = atof(argv[5]), duration = atof(argv[6]);
    int repeats = atoi(argv[7]);
    long steps = (long)(duration / dt + 1e-9);
    double best = INFINITY, t_switch = NAN, m[3];
    for (int r = 0; r < repeats; r++) {
        m[0] = sin(theta0);
        m[1] = 0.0;
        m[2] = cos(theta0);
        t_switch = NAN;
        double start = now();
        for (long s = 0; s < steps; s++) {
            double mz_prev = m[2];
            rk4_step(&p, m, dt);
            if (isnan(t_switch) && mz_prev >= 0.0 && m[2] < 0.0)
                t_switch = (s + mz_prev / (mz_prev - m[2])) * dt;
        }
        double elapsed = now() - start;
        if (elapsed < best) best = elapsed;
    }
    printf("{\"steps\": %ld, \"switching_time_s\": %.17g, \"best_s\": %.9g, \"steps_per_s\": %.9g, "
           "\"m_final\": [%.17g, %.17g, %.17g]}\n",
           steps, t_switch, best, steps / best, m[0], m[1], m[2]);
    return 0;
}
