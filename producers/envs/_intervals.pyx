# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One control interval of many episode copies in one compiled call: the task's step.

For every listed row: clip the action, turn it into a current density (off inside the dead
band), integrate the interval with the physics core (its batched lanes or its single-device
path: the bits of `px.simulate` either way), record the first crossing of m·target through
zero, add the interval's time, Joule energy and integrator steps, score it (reward,
terminated, truncated) and write the observation. Rows run in parallel (OpenMP, no GIL) when
asked for more than one thread; the result does not depend on the thread count. Units: SI
(A/m^2, s, J).
"""
from cython.parallel cimport prange
from libc.math cimport NAN, cos, isfinite, isnan, sin
from libc.stdint cimport int64_t, uint64_t

cimport numpy as cnp
from libc.stdlib cimport free, malloc

from physics_ext._llg cimport LANES, NPAR, RunResult, integrate_fixed, run_lanes

cnp.import_array()

# A last group of at least this many rows goes through the lanes padded (cheaper than one by one).
cdef enum:
    PAD_MIN_ROWS = 6

# Layout of the task row (float64), filled by producers.envs.task.SwitchingTask.
cdef enum:
    T_J_MAX             # A/m^2 per unit action
    T_DEADBAND          # |action| at or below it: current off
    T_INTERVAL          # control interval [s]
    T_DT                # integrator step [s]
    T_METHOD            # physics_ext method code
    T_THRESHOLD         # m·target for success
    T_TIME_BUDGET       # [s]
    T_BONUS             # success bonus
    T_ENERGY_WEIGHT
    T_TIME_WEIGHT
    T_ENERGY_BUDGET     # [J]
    TASK_SIZE


def task_row_size():
    """Entries of the task row."""
    return TASK_SIZE


cdef inline double clip1(double x) noexcept nogil:
    return -1.0 if x < -1.0 else (1.0 if x > 1.0 else x)


cdef int check_action(double action, Py_ssize_t copy) except -1:
    """ValueError unless `action` (of copy `copy`; -1: a single env's) is a finite number."""
    if not isfinite(action):
        whose = "action" if copy < 0 else f"action of copy {copy}"
        raise ValueError(f"{whose} is {action}: expected a finite number (fraction of j_max, "
                         "clipped to [-1, 1])")
    return 0


cdef class Copies:
    """The compiled view of an episode state (n copies; arrays of n rows, updated in place)."""

    cdef const double[::1] task
    cdef double[:, ::1] m
    cdef double[:, ::1] target
    cdef double[::1] last_action, elapsed_s, energy_j, switching_time_s
    cdef int64_t[::1] sim_steps, steps

    def __init__(self, const double[::1] task, double[:, ::1] m, double[:, ::1] target,
                 double[::1] last_action, double[::1] elapsed_s, double[::1] energy_j,
                 int64_t[::1] sim_steps, int64_t[::1] steps, double[::1] switching_time_s):
        self.task, self.m, self.target = task, m, target
        self.last_action, self.elapsed_s, self.energy_j = last_action, elapsed_s, energy_j
        self.sim_steps, self.steps, self.switching_time_s = sim_steps, steps, switching_time_s

    cdef inline double alignment(self, Py_ssize_t i) noexcept nogil:
        return (self.m[i, 0] * self.target[i, 0] + self.m[i, 1] * self.target[i, 1]
                + self.m[i, 2] * self.target[i, 2])

    cdef inline double current(self, double action) noexcept nogil:
        """A/m^2 for a clipped action: off inside the dead band."""
        return 0.0 if (action if action >= 0.0 else -action) <= self.task[T_DEADBAND] \
            else action * self.task[T_J_MAX]

    cdef inline void finish(self, Py_ssize_t i, double action, double current, double before,
                            double t_cross, double energy, int64_t integrator_steps,
                            double* reward, char* terminated, char* truncated) noexcept nogil:
        """Row i's bookkeeping once the physics has moved its m: the first crossing of m·target
        through zero, time, energy, steps, reward and episode end."""
        cdef double interval = self.task[T_INTERVAL], budget = self.task[T_TIME_BUDGET]
        cdef double after = self.alignment(i), elapsed = self.elapsed_s[i]
        cdef bint success
        if before <= 0.0 < after and isnan(self.switching_time_s[i]):
            # the integrator's interpolated m_z sign change (the poles are ±z), else linear
            self.switching_time_s[i] = elapsed + (t_cross if not isnan(t_cross)
                                                  else interval * before / (before - after))
        elapsed = elapsed + interval
        self.elapsed_s[i] = elapsed
        self.energy_j[i] += energy
        self.sim_steps[i] += integrator_steps
        self.steps[i] += 1
        self.last_action[i] = action
        success = after >= self.task[T_THRESHOLD] and current == 0.0
        terminated[i] = success
        truncated[i] = elapsed >= budget * (1 - 1e-9) and not success
        reward[i] = (self.task[T_BONUS] * success
                     - self.task[T_ENERGY_WEIGHT] * energy / self.task[T_ENERGY_BUDGET]
                     - self.task[T_TIME_WEIGHT] * interval / budget)

    cdef void step_row(self, Py_ssize_t i, const double* par, double action, uint64_t seed,
                       double* reward, char* terminated, char* truncated) noexcept nogil:
        """One interval of row i on the single-device path of the core."""
        cdef RunResult res
        cdef double interval = self.task[T_INTERVAL]
        cdef double a = clip1(action)
        cdef double current = self.current(a)
        cdef double before = self.alignment(i)
        integrate_fixed(par, &current, &interval, 1, self.task[T_DT], <int>self.task[T_METHOD],
                        seed, NAN, &self.m[i, 0], &res, NULL, NULL, 1, 0)
        self.finish(i, a, current, before, res.t_cross, res.energy, res.steps, reward,
                    terminated, truncated)

    cdef void step_lanes(self, const Py_ssize_t* rows, Py_ssize_t used, const double* par,
                         Py_ssize_t par_stride, const double* action, const uint64_t* seeds,
                         double* reward, char* terminated, char* truncated) noexcept nogil:
        """One interval of `used` (at most LANES) rows in lock step on the core's batched path,
        the lanes past `used` padded with the last row and discarded (each row gets the bits of
        `step_row`: a lane's bits depend on its own row only)."""
        cdef double lane_par[LANES * NPAR]
        cdef double lane_m[3 * LANES]
        cdef double a[LANES]
        cdef double current[LANES]
        cdef double before[LANES]
        cdef double t_cross[LANES]
        cdef double energy[LANES]
        cdef double t_end[LANES]
        cdef int64_t integrator_steps[LANES]
        cdef uint64_t lane_seeds[LANES]
        cdef double interval = self.task[T_INTERVAL]
        cdef Py_ssize_t j, k, c, i
        for j in range(LANES):
            k = j if j < used else used - 1
            i = rows[k]
            for c in range(NPAR):
                lane_par[j * NPAR + c] = par[par_stride * i + c]
            for c in range(3):
                lane_m[3 * j + c] = self.m[i, c]
            a[j] = clip1(action[k])
            current[j] = self.current(a[j])
            before[j] = self.alignment(i)
            lane_seeds[j] = seeds[k]
        run_lanes(lane_par, current, &interval, 1, self.task[T_DT], <int>self.task[T_METHOD],
                  lane_seeds, NAN, lane_m, t_cross, energy, integrator_steps, t_end)
        for j in range(used):
            i = rows[j]
            for c in range(3):
                self.m[i, c] = lane_m[3 * j + c]
            self.finish(i, a[j], current[j], before[j], t_cross[j], energy[j],
                        integrator_steps[j], reward, terminated, truncated)

    cdef void run_rows(self, const Py_ssize_t* rows, Py_ssize_t count, const double* par,
                       Py_ssize_t par_stride, const double* action, const uint64_t* seeds,
                       int threads, double* reward, char* terminated,
                       char* truncated) noexcept nogil:
        """One interval of the `count` rows `rows` (action[k], seeds[k] for row rows[k]): LANES
        at a time through the core's batched path (a last group of at least PAD_MIN_ROWS
        padded), the rest one by one; groups on `threads` OpenMP threads."""
        cdef Py_ssize_t k, g, i, groups = count // LANES
        if count - groups * LANES >= PAD_MIN_ROWS:
            groups += 1
        if threads > 1 and groups > 1:
            for g in prange(groups, num_threads=threads, schedule="dynamic", chunksize=1):
                self.step_lanes(rows + g * LANES, min(LANES, count - g * LANES), par, par_stride,
                                action + g * LANES, seeds + g * LANES, reward, terminated,
                                truncated)
        else:
            for g in range(groups):
                self.step_lanes(rows + g * LANES, min(LANES, count - g * LANES), par, par_stride,
                                action + g * LANES, seeds + g * LANES, reward, terminated,
                                truncated)
        for k in range(min(groups * LANES, count), count):
            i = rows[k]
            self.step_row(i, par + par_stride * i, action[k], seeds[k], reward, terminated,
                          truncated)

    def step(self, const double[:, ::1] par, const double[::1] action,
             const uint64_t[::1] seeds, const Py_ssize_t[::1] rows, int threads,
             double[::1] reward, char[::1] terminated, char[::1] truncated):
        """Advance the copies `rows` by one interval: `action[k]`, `seeds[k]` belong to row
        `rows[k]`; `par` holds one packed parameter row per copy, or one for all.
        reward/terminated/truncated (n,) are zero outside `rows`."""
        cdef Py_ssize_t k, i, n = self.m.shape[0], count = rows.shape[0]
        if action.shape[0] != count or seeds.shape[0] != count or reward.shape[0] != n:
            raise ValueError(f"{count} rows need {count} actions and seeds and {n} outputs")
        for k in range(count):
            check_action(action[k], rows[k])
        with nogil:
            for i in range(n):
                reward[i] = 0.0
                terminated[i] = 0
                truncated[i] = 0
            self.run_rows(&rows[0] if count else NULL, count, &par[0, 0],
                          NPAR if par.shape[0] > 1 else 0, &action[0] if count else NULL,
                          &seeds[0] if count else NULL, threads, &reward[0], &terminated[0],
                          &truncated[0])

    def step_vector(self, const double[:, ::1] par, const double[::1] action,
                    const uint64_t[:, ::1] step_seeds, char[::1] ended, int threads):
        """A vector env's step: every copy not `ended` (n,) advances one interval with
        `action[i]` and its seed `step_seeds[i, steps[i]]`; `ended` becomes terminated or
        truncated. Returns (observations (n, 9) float32, rewards (n,), terminated (n,) bool,
        truncated (n,) bool, how many copies ended), the copies that did not step at zero."""
        cdef Py_ssize_t i, count = 0, n = self.m.shape[0], done = 0
        if action.shape[0] != n or ended.shape[0] != n:
            raise ValueError(f"{n} copies need {n} actions and end flags")
        for i in range(n):
            if not ended[i]:
                check_action(action[i], i)
        cdef cnp.npy_intp obs_shape[2]
        obs_shape[0], obs_shape[1] = n, 9
        obs = cnp.PyArray_EMPTY(2, obs_shape, cnp.NPY_FLOAT32, 0)
        reward_array = cnp.PyArray_EMPTY(1, obs_shape, cnp.NPY_FLOAT64, 0)
        terminated_array = cnp.PyArray_EMPTY(1, obs_shape, cnp.NPY_BOOL, 0)
        truncated_array = cnp.PyArray_EMPTY(1, obs_shape, cnp.NPY_BOOL, 0)
        cdef float* obs_data = <float*>cnp.PyArray_DATA(obs)
        cdef double* reward = <double*>cnp.PyArray_DATA(reward_array)
        cdef char* terminated = <char*>cnp.PyArray_DATA(terminated_array)
        cdef char* truncated = <char*>cnp.PyArray_DATA(truncated_array)
        cdef Py_ssize_t* rows = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        cdef double* row_action = <double*>malloc(n * sizeof(double))
        cdef uint64_t* row_seeds = <uint64_t*>malloc(n * sizeof(uint64_t))
        try:
            if rows == NULL or row_action == NULL or row_seeds == NULL:
                raise MemoryError()
            with nogil:
                for i in range(n):
                    reward[i] = 0.0
                    terminated[i] = 0
                    truncated[i] = 0
                    if not ended[i]:
                        rows[count] = i
                        row_action[count] = action[i]
                        row_seeds[count] = step_seeds[i, self.steps[i]]
                        count = count + 1
                self.run_rows(rows, count, &par[0, 0], NPAR if par.shape[0] > 1 else 0,
                              row_action, row_seeds, threads, reward, terminated, truncated)
                for i in range(n):
                    ended[i] = terminated[i] or truncated[i]
                    done += ended[i]
                    self.observe_row(i, obs_data + 9 * i)
        finally:
            free(rows)
            free(row_action)
            free(row_seeds)
        return obs, reward_array, terminated_array, truncated_array, done

    def first_observation(self):
        """Row 0's observation (9,) float32 (a single env's)."""
        cdef cnp.npy_intp size = 9
        obs = cnp.PyArray_EMPTY(1, &size, cnp.NPY_FLOAT32, 0)
        self.observe_row(0, <float*>cnp.PyArray_DATA(obs))
        return obs

    def info(self, Py_ssize_t i, bint success):
        """The physical quantities of row i's episode so far (SI units): Joule energy, first
        crossing of m·target (None before it), success, integrator steps."""
        switch = self.switching_time_s[i]
        return {
            "energy_j": self.energy_j[i],
            "switching_time_s": None if isnan(switch) else switch,
            "success": success,
            "sim_steps": self.sim_steps[i],
        }

    def restart(self, const Py_ssize_t[::1] rows, const double[::1] stored,
                const double[::1] tilt, const double[::1] azimuth):
        """Begin new episodes in copies `rows`: row k stores the bit `stored[k]` (±1, as m_z),
        tilted by `tilt[k]` (rad) at azimuth `azimuth[k]` (rad); its target is the other pole;
        time, energy, steps and the last action start at zero."""
        cdef Py_ssize_t k, i
        with nogil:
            for k in range(rows.shape[0]):
                i = rows[k]
                self.m[i, 0] = sin(tilt[k]) * cos(azimuth[k])
                self.m[i, 1] = sin(tilt[k]) * sin(azimuth[k])
                self.m[i, 2] = cos(tilt[k]) * stored[k]
                self.target[i, 0] = 0.0
                self.target[i, 1] = 0.0
                self.target[i, 2] = -stored[k]
                self.last_action[i] = 0.0
                self.elapsed_s[i] = 0.0
                self.energy_j[i] = 0.0
                self.sim_steps[i] = 0
                self.steps[i] = 0
                self.switching_time_s[i] = NAN

    cdef void observe_row(self, Py_ssize_t i, float* out) noexcept nogil:
        """Row i's observation in the layout of the env docstrings: m, target, last action,
        elapsed fraction of the time budget, energy fraction of the energy budget (|m| is 1 to
        rounding and clipped; both fractions end at 1)."""
        cdef double f
        out[0] = <float>clip1(self.m[i, 0])
        out[1] = <float>clip1(self.m[i, 1])
        out[2] = <float>clip1(self.m[i, 2])
        out[3] = <float>self.target[i, 0]
        out[4] = <float>self.target[i, 1]
        out[5] = <float>self.target[i, 2]
        out[6] = <float>self.last_action[i]
        f = self.elapsed_s[i] / self.task[T_TIME_BUDGET]
        out[7] = <float>(f if f < 1.0 else 1.0)
        f = self.energy_j[i] / self.task[T_ENERGY_BUDGET]
        out[8] = <float>(f if f < 1.0 else 1.0)

    def observe(self, float[:, ::1] obs):
        """Every row's observation into obs (n, 9) float32."""
        cdef Py_ssize_t i, n = self.m.shape[0]
        if obs.shape[0] != n or obs.shape[1] != 9:
            raise ValueError(f"obs must have shape ({n}, 9), got {tuple(obs.shape)[:2]}")
        with nogil:
            for i in range(n):
                self.observe_row(i, &obs[i, 0])


cdef class Episode(Copies):
    """Copy 0 of an episode state as one env steps it: with its packed parameter row and the
    integrator seed of every control interval (drawn at its reset)."""

    cdef const double[:, ::1] par
    cdef const uint64_t[::1] seeds

    def __init__(self, const double[:, ::1] par, const uint64_t[::1] seeds, *state):
        super().__init__(*state)
        self.par, self.seeds = par, seeds

    def step_env(self, double action):
        """One control interval of copy 0 at `action`: the env's step tuple (observation (9,),
        reward, terminated, truncated, info)."""
        cdef double reward
        cdef char terminated, truncated
        cdef Py_ssize_t k = self.steps[0]
        if k >= self.seeds.shape[0]:
            raise RuntimeError("the episode is over (time budget spent); call reset()")
        check_action(action, -1)
        with nogil:
            self.step_row(0, &self.par[0, 0], action, self.seeds[k], &reward, &terminated,
                          &truncated)
        return (self.first_observation(), reward, terminated != 0, truncated != 0,
                self.info(0, terminated != 0))
