"""stable-baselines3 on the gym: SB3's env checker on every env, the native SB3 VecEnv equal to
SB3's DummyVecEnv of single envs bit for bit under the same seeds."""
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import DummyVecEnv

import producers
from producers.trainers.sb3_vecenv import NativeVecEnv


@pytest.mark.parametrize("env_id", producers.ENV_IDS)
def test_sb3_env_checker_passes(env_id):
    check_env(gym.make(env_id).unwrapped, warn=True, skip_render_check=True)


@pytest.mark.parametrize("env_id", ["SpinTorque-v0", "SpinTorque-v1", "SpinTorqueSOT-v1"])
def test_native_vecenv_is_dummy_vecenv_of_single_envs_bit_for_bit(env_id):
    copies, kwargs = 6, {"time_budget": 2e-9}  # 20 steps: several autoresets in 60 steps
    native = NativeVecEnv(env_id, copies, **kwargs)
    dummy = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(copies)])
    native.seed(11)
    dummy.seed(11)
    assert np.array_equal(native.reset(), dummy.reset())
    actions = np.random.default_rng(4).uniform(-1, 1, (60, copies, 1)).astype(np.float32)
    ended = 0
    for action in actions:
        obs, rewards, dones, infos = native.step(action)
        dummy_obs, dummy_rewards, dummy_dones, dummy_infos = dummy.step(action)
        assert np.array_equal(obs, dummy_obs) and np.array_equal(rewards, dummy_rewards)
        assert np.array_equal(dones, dummy_dones)
        for info, dummy_info in zip(infos, dummy_infos):
            if "terminal_observation" not in dummy_info:
                assert info == {}
                continue
            ended += 1
            assert np.array_equal(info["terminal_observation"],
                                  dummy_info["terminal_observation"])
            assert info["TimeLimit.truncated"] == dummy_info["TimeLimit.truncated"]
            for key in ("energy_j", "success", "sim_steps"):
                assert info[key] == dummy_info[key]
            switch = dummy_info["switching_time_s"]
            assert info["switching_time_s"] == switch or (
                switch is None and np.isnan(info["switching_time_s"]))
    assert ended >= 2 * copies
