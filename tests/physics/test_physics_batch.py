"""The batched path runs exactly the single-device code: same bits, any number of threads."""
import numpy as np
import pytest

import physics_ext as px

N = 26  # three groups of 8 lock-step lanes and two devices on the scalar path
SEGMENT = 0.5e-9


def devices():
    """Distinct parameters, fields, pulses, temperatures and seeds per device."""
    rng = np.random.default_rng(11)
    params = [
        px.make_params(
            "stt-pma" if i % 3 else "sot-pma",
            alpha=0.01 + 0.002 * i,
            field_like=0.1 * (i % 4),
            field=(1e3 * i, -5e2 * i, 2e3 * (i % 5)),
        )
        for i in range(N)
    ]
    m0 = rng.normal(size=(N, 3))
    m0[:, 2] = np.abs(m0[:, 2]) + 2.0
    pulses = np.array([p.jc0 for p in params])[:, None] * rng.uniform(0.0, 3.0, size=(N, 6))
    temperatures = np.where(np.arange(N) % 2 == 0, 300.0, 0.0)
    seeds = np.arange(N, dtype=np.uint64) * 977 + 3
    return params, m0, pulses, temperatures, seeds


@pytest.mark.parametrize("stop_mz", [None, 0.3])
@pytest.mark.parametrize("method", ["rk4", "heun"])
def test_batched_equals_single_bit_for_bit(method, stop_mz):
    params, m0, pulses, temperatures, seeds = devices()
    if method == "rk4":
        temperatures = np.zeros(N)
    batch = px.simulate_batch(params, m0, pulses, SEGMENT, 1e-13, method=method,
                              temperature=temperatures, seeds=seeds, threads=2, stop_mz=stop_mz)
    for i in range(N):
        single = px.simulate(params[i], m0[i], pulses[i], None, 1e-13, method=method, stop_mz=stop_mz,
                             temperature=temperatures[i], seed=int(seeds[i]), segment_duration=SEGMENT)
        np.testing.assert_array_equal(batch.m_final[i], single.m_final)
        assert batch.energy_j[i] == single.energy_j
        assert batch.steps[i] == single.steps
        assert batch.t_final_s[i] == single.t_final_s
        if stop_mz is None:
            assert single.steps == 6 * 5000
        assert bool(batch.switched[i]) == single.switched
        if single.switching_time_s is None:
            assert np.isnan(batch.switching_time_s[i])
        else:
            assert batch.switching_time_s[i] == single.switching_time_s
    if stop_mz is None:
        assert batch.switched.any() and not batch.switched.all()
    else:
        assert 0 < np.sum(batch.steps < 6 * 5000) < N  # some lanes stop early, others run on


def test_one_and_two_threads_give_identical_output():
    params, m0, pulses, temperatures, seeds = devices()
    runs = [
        px.simulate_batch(params, m0, pulses, SEGMENT, 1e-13, method="heun",
                          temperature=temperatures, seeds=seeds, threads=threads)
        for threads in (1, 2)
    ]
    for field in ("m_final", "energy_j", "switching_time_s", "steps", "t_final_s"):
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field))


def test_shared_params_broadcast_and_default_seeds():
    params = px.make_params("stt-pma")
    pulses = np.full((4, 2), 2.0 * params.jc0)
    batch = px.simulate_batch(params, (0.05, 0.0, 1.0), pulses, 5e-9, 1e-13)
    single = px.simulate(params, (0.05, 0.0, 1.0), 2.0 * params.jc0, 10e-9, 1e-13)
    for i in range(4):
        np.testing.assert_array_equal(batch.m_final[i], single.m_final)
        assert batch.switching_time_s[i] == single.switching_time_s
    thermal = px.simulate_batch(params, (0.0, 0.0, 1.0), np.zeros((3, 1)), 1e-10, 1e-13,
                                method="heun", temperature=300.0)
    assert len({tuple(m) for m in thermal.m_final}) == 3  # seeds 0, 1, 2: independent streams


@pytest.mark.parametrize("method,n", [("heun", n) for n in (1, 4, 5, 6, 15, 16, 17, 21, 22, 37)]
                         + [("rk4", n) for n in (2, 3, 19, 35)] + [("heun-0K", 18)])
def test_every_batch_size_gives_the_single_bits(method, n):
    """Whole lane groups, a padded last group (free lanes repeat a device) and leftovers run one
    by one: each device gets its single-run bits; thermal and athermal lanes mixed in a group,
    all thermal, none; lanes with and without current."""
    params, m0, pulses, temperatures, seeds = devices()
    reps = -(-n // N)
    params, m0, pulses = (params * reps)[:n], np.tile(m0, (reps, 1))[:n], np.tile(pulses, (reps, 1))[:n, :2]
    temperatures = np.tile(temperatures, reps)[:n]
    pulses[1 % n, 0] = 0.0  # a lane without Joule heating in a group that has it
    if n == 37:
        temperatures = np.full(n, 300.0)  # every lane thermal: the vectorised draws
    if method in ("rk4", "heun-0K"):
        temperatures = np.zeros(n)  # heun-0K: Heun lanes without any draws
        method = method[:4]
    seeds = np.arange(n, dtype=np.uint64) * 7919 + 5
    batch = px.simulate_batch(params, m0, pulses, 0.2e-9, 1e-13, method=method, temperature=temperatures,
                              seeds=seeds, threads=2, stop_mz=-0.2)
    for i in range(n):
        single = px.simulate(params[i], m0[i], pulses[i], None, 1e-13, method=method, stop_mz=-0.2,
                             temperature=temperatures[i], seed=int(seeds[i]), segment_duration=0.2e-9)
        np.testing.assert_array_equal(batch.m_final[i], single.m_final)
        assert (batch.energy_j[i], batch.steps[i], batch.t_final_s[i]) == (
            single.energy_j, single.steps, single.t_final_s)
        assert np.isnan(batch.switching_time_s[i]) if single.switching_time_s is None else (
            batch.switching_time_s[i] == single.switching_time_s)


def test_batch_stop_event_and_input_errors():
    params = px.make_params("stt-pma")
    batch = px.simulate_batch(params, (0.05, 0.0, 1.0), np.full((2, 1), 2.0 * params.jc0), 20e-9, 1e-13,
                              stop_mz=0.0)
    assert np.all(batch.steps == np.ceil(batch.switching_time_s / 1e-13))  # ends on the crossing step
    np.testing.assert_allclose(batch.t_final_s, batch.steps * 1e-13, rtol=1e-12)
    with pytest.raises(px.ParameterError, match="m0"):
        px.simulate_batch(params, np.zeros((2, 3)), np.zeros((2, 1)), 1e-9, 1e-13)
    with pytest.raises(px.ParameterError, match="method"):
        px.simulate_batch(params, (0, 0, 1), np.zeros((2, 1)), 1e-9, 1e-13, method="dp45")
    with pytest.raises(px.ParameterError, match="params"):
        px.simulate_batch([params], (0, 0, 1), np.zeros((2, 1)), 1e-9, 1e-13)
    with pytest.raises(px.ParameterError, match="pulses"):
        px.simulate_batch(params, (0, 0, 1), np.full((2, 1), np.nan), 1e-9, 1e-13)
    with pytest.raises(px.ParameterError, match="seeds"):
        px.simulate_batch(params, (0, 0, 1), np.zeros((2, 1)), 1e-9, 1e-13, seeds=[1])


@pytest.mark.parametrize("method,temperature", [("rk4", 0.0), ("heun", 300.0)])
@pytest.mark.parametrize("device", ["stt-pma", "sot-pma"])
def test_constant_interval_fast_path_equals_the_general_and_batched_paths(device, method, temperature):
    """simulate() with a scalar current (the lean interval entry of the core, as the envs use)
    gives the bits of the segment path, the batch and _llg.run_interval on the packed row."""
    from physics_ext import _llg
    from physics_ext.simulation import _packed

    params = px.make_params(device)
    m0 = np.array([0.3, -0.2, 0.93])
    current, duration, dt, seed = 1.7 * params.jc0, 0.1e-9, 1e-12, 12345
    fast = px.simulate(params, m0, current, duration, dt, method=method,
                       temperature=temperature, seed=seed)
    general = px.simulate(params, m0, [current], None, dt, method=method, temperature=temperature,
                          seed=seed, segment_duration=duration)
    batch = px.simulate_batch(params, m0[None], [[current]], duration, dt, method=method,
                              temperature=temperature, seeds=[seed], threads=1)
    m = m0.copy()
    t_cross, energy, steps = _llg.run_interval(_packed(params, temperature), m, current, duration,
                                               dt, {"rk4": 0, "heun": 1}[method], seed)
    assert np.array_equal(fast.m_final, general.m_final)
    assert np.array_equal(fast.m_final, batch.m_final[0])
    assert np.array_equal(fast.m_final, m)
    assert fast.energy_j == general.energy_j == batch.energy_j[0] == energy
    assert fast.steps == general.steps == batch.steps[0] == steps == 100
    assert fast.switching_time_s == general.switching_time_s
    assert fast.t_final_s == general.t_final_s == duration
    assert fast.switched == general.switched


def test_derived_quantities_and_packed_row_are_computed_once_per_params():
    params = px.make_params("stt-pma")
    assert params.demag_factors is params.demag_factors
    assert params.hk_eff == px.make_params("stt-pma").hk_eff
    from physics_ext.simulation import _packed, pack

    row = _packed(params, 300.0)
    assert row is _packed(params, 300.0) and not row.flags.writeable
    assert np.array_equal(row, pack(params, 300.0))
    assert params == px.make_params("stt-pma") and hash(params) == hash(px.make_params("stt-pma"))
