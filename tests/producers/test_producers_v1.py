"""The v1 envs are the v0 task in the write frame with energy_weight 3: same physics and ends."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from producers.envs import frame


@pytest.mark.parametrize("v0, v1", [("SpinTorque-v0", "SpinTorque-v1"),
                                    ("SpinTorqueSOT-v0", "SpinTorqueSOT-v1")])
@pytest.mark.parametrize("direction", ["down", "up"])
def test_v1_is_v0_with_the_action_toward_the_target(v0, v1, direction):
    lab = gym.make(v0, write_direction=direction, energy_weight=3.0).unwrapped
    write = gym.make(v1, write_direction=direction).unwrapped
    lab_obs, _ = lab.reset(seed=7)
    obs, _ = write.reset(seed=7)
    target_z = -1.0 if direction == "down" else 1.0
    assert obs[3] == target_z and np.array_equal(obs, frame.write_frame_obs(lab_obs)[0])
    deadband = write.task.action_deadband
    for a in np.random.default_rng(2).uniform(-1, 1, 100).astype(np.float32):
        toward = (float(a) + 1) / 2 if (float(a) + 1) / 2 > deadband else 0.0
        lab_step = lab.step(np.array([-target_z * toward]))
        step = write.step(np.array([a], np.float32))
        assert step[1:4] == lab_step[1:4] and step[4] == lab_step[4]
        assert np.array_equal(step[0], frame.write_frame_obs(lab_step[0])[0])
        assert step[0][4] == np.float32(toward)
        if step[2] or step[3]:
            break


def test_v1_observation_puts_the_target_at_plus_z():
    env = gym.make("SpinTorque-v1", temperature=0.0, write_direction="up")
    obs, _ = env.reset(seed=0)
    assert obs[2] < -0.99  # stored -z = far from the target
    for _ in range(40):
        obs, *_ = env.step(np.array([1.0], np.float32))
    assert obs[2] > 0.9
    obs, reward, terminated, truncated, info = env.step(np.array([-1.0], np.float32))
    assert terminated and info["success"] and obs[4] == 0.0


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_v1_vector_env_refuses_non_finite_actions(mode):
    envs = gym.make_vec("SpinTorque-v1", num_envs=2, vectorization_mode="vector_entry_point",
                        autoreset_mode=mode)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 7)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="action of copy 1 is"):
            envs.step(np.array([[0.5], [bad]], np.float32))
    assert np.array_equal(frame.write_frame_obs(envs.state.observe(envs.task)), obs)


def test_same_step_autoreset_returns_the_next_episode_and_the_final_observation():
    kwargs = {"num_envs": 3, "vectorization_mode": "vector_entry_point", "time_budget": 5e-10}
    same = gym.make_vec("SpinTorque-v1", autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    nxt = gym.make_vec("SpinTorque-v1", **kwargs)
    same.reset(seed=1)
    nxt.reset(seed=1)
    action = np.full((3, 1), 0.7, np.float32)
    for _ in range(4):
        nxt.step(action)
        same.step(action)
    final = nxt.step(action)
    step = same.step(action)
    assert final[3].all() and step[3].all()  # 5 steps: the budget is spent
    assert np.array_equal(step[4]["final_obs"], final[0]) and step[4]["_final_obs"].all()
    assert np.array_equal(step[0], nxt.step(action)[0])  # the autoreset's first observation


def _expected_array_v1_obs(lab_obs: np.ndarray, n: int) -> np.ndarray:
    """SpinTorqueArray-v0's observation in the v1 layout, each device in its write frame."""
    devices = frame.turned(lab_obs[: 3 * n].reshape(n, 3), lab_obs[3 * n : 4 * n],
                           lab_obs[4 * n : 5 * n])
    return np.concatenate([devices[:, :3].ravel(), devices[:, 3], devices[:, 4], lab_obs[5 * n :]])


@pytest.mark.parametrize("coupling", [False, True])
def test_array_v1_is_array_v0_with_each_action_toward_its_own_target(coupling):
    n, pattern = 4, np.array([1.0, -1.0, -1.0, 1.0])
    kwargs = {"num_devices": n, "dipolar_coupling": coupling}
    lab = gym.make("SpinTorqueArray-v0", energy_weight=3.0, **kwargs).unwrapped
    write = gym.make("SpinTorqueArray-v1", **kwargs).unwrapped
    lab_obs, _ = lab.reset(seed=5, options={"pattern": pattern})
    obs, _ = write.reset(seed=5, options={"pattern": pattern})
    assert np.array_equal(obs[3 * n : 4 * n], pattern)
    assert np.array_equal(obs, _expected_array_v1_obs(lab_obs, n))
    deadband = write.task.action_deadband
    # episode 1: 60 random actions, then writes until the time budget (100 steps) is spent;
    # episode 2: 40 steps of full current toward every target, then off: written
    actions = np.concatenate([np.random.default_rng(3).uniform(-1, 1, (60, n)),
                              np.ones((40, n)), -np.ones((1, n))]).astype(np.float32)
    for episode in range(2):
        for a in actions[60 * episode :]:
            toward = (a.astype(float) + 1) / 2
            lab_step = lab.step(-pattern * np.where(toward > deadband, toward, 0.0))
            step = write.step(a)
            assert step[1:4] == lab_step[1:4] and step[4] == lab_step[4]
            assert np.array_equal(step[0], _expected_array_v1_obs(lab_step[0], n))
            if step[2] or step[3]:
                break
        assert step[3] if episode == 0 else step[2] and step[4]["bit_errors"] == 0
        lab.reset(seed=6, options={"pattern": pattern})
        write.reset(seed=6, options={"pattern": pattern})
