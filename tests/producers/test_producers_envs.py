"""The environments: gymnasium's checker, seeding, physics accounting, vector env, rendering."""
import doctest

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import physics_ext as px
import producers
from producers.envs import array, spin_torque, vector
from producers.rollout import PulsePolicy, episode_task, rollout


@pytest.mark.parametrize("env_id", producers.ENV_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id).unwrapped
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("module", [spin_torque, vector, array])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module, extraglobs={"np": np})
    assert tried > 0 and failures == 0


def run_episode(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([action], np.float32))
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trace


def test_same_seed_same_episode_other_seed_differs():
    env = gym.make("SpinTorque-v0").unwrapped
    actions = [0.8] * 30 + [0.0] * 70
    first, again = run_episode(env, 5, actions), run_episode(env, 5, actions)
    other = run_episode(env, 6, actions)
    assert np.array_equal(first[0], again[0])
    for a, b in zip(first[1:], again[1:]):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(first[0], other[0])


def test_info_energy_is_the_integrators_joule_energy_for_the_same_pulse():
    env = gym.make("SpinTorque-v0", temperature=0.0, write_direction="down").unwrapped
    obs, _ = env.reset(seed=3)
    m0 = env.state.m[0].copy()
    actions = [1.0] * 35 + [0.5] * 10 + [0.0] * 5
    energies = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([action], np.float32))
        energies.append(info["energy_j"])
    task = env.task
    reference = px.simulate(
        task.params, m0, np.array(actions) * task.j_max, None, task.dt, method=task.method,
        temperature=0.0, segment_duration=task.control_interval,
    )
    assert info["energy_j"] == pytest.approx(reference.energy_j, rel=1e-9)
    assert np.allclose(env.state.m[0], reference.m_final, atol=1e-9)
    assert info["sim_steps"] == reference.steps
    assert reference.switching_time_s is not None
    assert info["switching_time_s"] == pytest.approx(reference.switching_time_s, rel=1e-9)
    assert np.all(np.diff(energies) >= 0) and energies[-1] == energies[-6]


def test_reward_accounts_energy_and_time_and_success():
    env = gym.make("SpinTorque-v0", temperature=0.0, write_direction="down").unwrapped
    task = env.task
    env.reset(seed=0)
    total, energy_before = 0.0, 0.0
    for step in range(100):
        action = 1.0 if step < 40 else 0.0
        obs, reward, terminated, truncated, info = env.step(np.array([action], np.float32))
        expected = (
            task.success_bonus * terminated
            - task.energy_weight * (info["energy_j"] - energy_before) / task.energy_budget_j
            - task.time_weight * task.control_interval / task.time_budget
        )
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-15)
        energy_before = info["energy_j"]
        total += reward
        if terminated or truncated:
            break
    assert terminated and not truncated and info["success"]
    assert obs[2] <= -task.success_threshold


def test_time_budget_truncates_and_never_terminates():
    env = gym.make("SpinTorque-v0", time_budget=1e-9).unwrapped
    env.reset(seed=0)
    for step in range(10):
        obs, reward, terminated, truncated, info = env.step(np.array([0.0], np.float32))
    assert truncated and not terminated and not info["success"]
    assert obs[7] == 1.0


@pytest.mark.parametrize("env_id, kwargs, stop", [
    ("SpinTorque-v0", {}, None),
    ("SpinTorque-v0", {}, 0.3),
    ("SpinTorque-v1", {}, None),
    ("SpinTorque-v1", {}, 0.3),
    ("SpinTorqueArray-v0", {"num_devices": 3}, None),
    ("SpinTorqueArray-v0", {"num_devices": 3, "dipolar_coupling": True}, 0.5),
    ("SpinTorqueArray-v1", {"num_devices": 3}, None),
    ("SpinTorqueArray-v1", {"num_devices": 3, "dipolar_coupling": True}, 0.5),
])
def test_rollout_matches_the_env_episode_for_episode(env_id, kwargs, stop):
    """The trainers' rollout is the env, bit for bit: same actions (the policy's), same seeds
    (on the v1 envs, through the write frame)."""
    env = gym.make(env_id, **kwargs).unwrapped
    task = episode_task(env_id, kwargs)
    pulse = np.concatenate([np.full(30, 0.9), np.full(10, 0.4)])
    policy = PulsePolicy(pulse, env_id, kwargs, "test", stop_alignment=stop)
    seeds = np.arange(11, 17)
    stops = None if stop is None else np.full(len(seeds), stop)
    batch = rollout(task, np.tile(pulse, (len(seeds), 1)), seeds, stops)
    # a v1 action is the float32 2·A − 1 of amplitude A: the current it gives may differ from
    # A's in the last bits (A < 0.5), so its episodes agree to rounding, not bit for bit
    exact = not env_id.endswith("-v1")

    def close(value):
        return value if exact else pytest.approx(value, rel=1e-6)

    for i, seed in enumerate(seeds):
        obs, info = env.reset(seed=int(seed))
        total = 0.0
        for steps in range(1, 1000):
            obs, reward, terminated, truncated, info = env.step(policy(obs, task.max_steps))
            total += reward
            if terminated or truncated:
                break
        assert steps == batch.steps[i]
        assert info["success"] == batch.success[i]
        assert info["energy_j"] == close(batch.energy_j[i])
        assert info["sim_steps"] == batch.sim_steps[i]
        switch = batch.switching_time_s[i]
        assert info["switching_time_s"] == (None if np.isnan(switch) else close(switch))
        assert total == pytest.approx(batch.total_reward[i], rel=1e-12 if exact else 1e-6)
    assert batch.success.any()
    if env_id.startswith("SpinTorqueArray"):  # patterns with 0 .. 3 bits to write
        assert batch.bits.min() < batch.bits.max()


def test_vector_env_copies_are_independent_and_reproducible_across_autoresets():
    def copy_zero_trace(other_action, seed=21):
        envs = gym.make_vec(
            "SpinTorque-v0", num_envs=3, vectorization_mode="vector_entry_point",
            time_budget=2e-9,
        )
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        obs, _ = envs.reset(seed=seed)
        trace, ends = [obs[0]], 0
        for _ in range(70):
            actions = np.array([[1.0], [other_action], [-other_action]], np.float32)
            obs, rewards, terminated, truncated, infos = envs.step(actions)
            trace.append(obs[0])
            ends += terminated[0] or truncated[0]
        return np.array(trace), ends

    reference, ends = copy_zero_trace(0.0)
    assert ends >= 3  # the copy went through several autoresets
    assert np.array_equal(reference, copy_zero_trace(0.9)[0])
    assert not np.array_equal(reference, copy_zero_trace(0.0, seed=22)[0])


def test_vector_env_steps_like_single_envs_and_reports_final_infos():
    envs = gym.make_vec(
        "SpinTorque-v0", num_envs=4, vectorization_mode="vector_entry_point", temperature=0.0,
        write_direction="down", time_budget=1e-9,
    )
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (4, 9) and obs.dtype == np.float32
    for _ in range(10):
        obs, rewards, terminated, truncated, infos = envs.step(np.ones((4, 1), np.float32))
    assert truncated.all() and not terminated.any()
    assert infos["_energy_j"].all() and (infos["energy_j"] > 0).all()
    assert (infos["sim_steps"] == 1000).all()
    single = gym.make("SpinTorque-v0", temperature=0.0, write_direction="down", time_budget=1e-9)
    single.reset(seed=0)
    for _ in range(10):
        _, _, _, _, info = single.step(np.ones(1, np.float32))
    assert info["sim_steps"] == 1000
    assert info["energy_j"] == pytest.approx(infos["energy_j"][0], rel=1e-3)


def test_array_env_writes_a_pattern_with_coupling():
    env = gym.make("SpinTorqueArray-v0", num_devices=3, dipolar_coupling=True, temperature=0.0)
    obs, info = env.reset(seed=4, options={"pattern": [-1, 1, -1]})
    assert obs.shape == (17,)
    start_z = obs[2:9:3]
    currents = np.where(np.array([-1, 1, -1]) < 0, 1.0, -1.0).astype(np.float32)
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(currents)
    obs, reward, terminated, truncated, info = env.step(np.zeros(3, np.float32))
    assert terminated and info["bit_errors"] == 0 and info["success"]
    assert np.allclose(np.sign(obs[2:9:3]), [-1, 1, -1])
    assert info["energy_j"] > 0 and len(start_z) == 3
    with pytest.raises(ValueError, match="pattern"):
        env.reset(options={"pattern": [1, 0, 1]})


@pytest.mark.parametrize("env_id", ["SpinTorque-v0", "SpinTorqueArray-v0"])
def test_rgb_array_render_draws_the_trajectory(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    image = env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 0


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="control_interval"):
        gym.make("SpinTorque-v0", control_interval=-1.0)
    with pytest.raises(ValueError, match="write_direction"):
        gym.make("SpinTorque-v0", write_direction="sideways")
    with pytest.raises(ValueError, match="alpha"):
        gym.make("SpinTorque-v0", device_params={"alpha": -1})


def staircase(pieces, segments=100):
    """An 8-piece pulse like CEM's (pieces spread over the segments) -> per-interval amplitudes."""
    owner = np.arange(segments) * len(pieces) // segments
    return np.asarray(pieces, dtype=float)[owner]


def test_sot_env_defaults_to_a_field_like_torque_and_keeps_overrides():
    assert px.make_params("sot-pma").field_like == 0.0  # the device's own default is unchanged
    assert gym.make("SpinTorqueSOT-v0").unwrapped.task.params.field_like == 0.5
    bare = gym.make("SpinTorqueSOT-v0", device_params={"field_like": 0.0, "alpha": 0.03})
    assert bare.unwrapped.task.params.field_like == 0.0
    assert bare.unwrapped.task.params.alpha == 0.03
    vec = gym.make_vec("SpinTorqueSOT-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert vec.unwrapped.task.params.field_like == 0.5
    stt = gym.make("SpinTorque-v0").unwrapped.task.params
    assert stt == px.make_params("stt-pma")


def test_sot_ramp_down_writes_both_directions_only_with_the_field_like_torque():
    """CEM's 8-piece pulse can express the ramp-down (1, 0.5, 0.25, then off), and +1 relative
    to the write direction is the right sign both ways: at 300 K every write succeeds with the
    env's field-like torque; the bare device leaves the bit to the precession phase."""
    seeds = np.arange(200) + 1000
    pulses = np.tile(staircase([1.0, 0.5, 0.25, 0, 0, 0, 0, 0]), (len(seeds), 1))
    task = gym.make("SpinTorqueSOT-v0").unwrapped.task
    batch = rollout(task, pulses, seeds)
    down = np.array([task.initial_states(np.random.default_rng(int(s)), 1)[1][0, 2] < 0
                     for s in seeds])
    assert 50 < down.sum() < 150  # both write directions are exercised
    assert batch.success.all()
    bare = gym.make("SpinTorqueSOT-v0", device_params={"field_like": 0.0}).unwrapped.task
    assert rollout(bare, pulses, seeds).success_rate < 0.8


@pytest.mark.parametrize("copies", [5, 23])  # one by one; a group of 16 and a padded one
def test_vector_env_copy_is_the_single_env_with_its_seed_on_any_thread_count(copies):
    seeds = list(range(5, 5 + copies))
    kwargs = {"time_budget": 3e-9}
    actions = np.random.default_rng(3).uniform(-1, 1, (40, len(seeds), 1)).astype(np.float32)

    def vector_run(threads):
        envs = gym.make_vec("SpinTorque-v0", num_envs=len(seeds),
                            vectorization_mode="vector_entry_point", threads=threads, **kwargs)
        steps = [envs.reset(seed=seeds)[0]]
        for action in actions:
            obs, reward, terminated, truncated, infos = envs.step(action)
            steps.append((obs, reward, terminated, truncated))
        return steps

    one, two = vector_run(1), vector_run(2)
    assert np.array_equal(one[0], two[0])
    for a, b in zip(one[1:], two[1:]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for i, seed in enumerate(seeds):  # copy i's first episode is the single env's, bit for bit
        env = gym.make("SpinTorque-v0", **kwargs)
        obs, _ = env.reset(seed=seed)
        assert np.array_equal(obs, one[0][i])
        for k, action in enumerate(actions):
            obs, reward, terminated, truncated, _ = env.step(action[i])
            vector_obs, vector_reward, vector_terminated, vector_truncated = one[k + 1]
            assert np.array_equal(obs, vector_obs[i]) and reward == vector_reward[i]
            assert (terminated, truncated) == (vector_terminated[i], vector_truncated[i])
            if terminated or truncated:
                break
        assert k >= 2


@pytest.mark.parametrize("fast", [1, 2])
def test_thread_chooser_settles_on_the_faster_choice_and_rarely_probes_the_other(fast):
    import time

    from producers.envs.threads import ThreadChooser

    chooser, used = ThreadChooser(2), []

    def call(threads):
        used.append(threads)
        time.sleep(0.0002 if threads == fast else 0.02)
        return threads

    for _ in range(300):
        assert chooser.run(call) in (1, 2)
    assert chooser.current == fast
    assert used.count(3 - fast) <= 6  # its start, its timing, a probe or two


def test_a_non_finite_action_is_refused_and_leaves_the_state_alone():
    env = gym.make("SpinTorque-v0")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="action is nan"):
        env.step(np.array([np.nan], np.float32))
    assert np.array_equal(env.unwrapped.task.observe(env.unwrapped.state)[0], obs)
    envs = gym.make_vec("SpinTorque-v0", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=0)
    with pytest.raises(ValueError, match="action of copy 1 is inf"):
        envs.step(np.array([[0.5], [np.inf]], np.float32))
    assert np.array_equal(envs.state.observe(envs.task), obs)
    assert envs.step(np.full((2, 1), 0.5, np.float32))[0].shape == (2, 9)
