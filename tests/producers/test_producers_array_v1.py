"""SpinTorqueArray-v1 (each device in its write frame) through the pulse trainers, the CLI and
the policy's MLflow pyfunc model. (v1 == v0 step by step: test_producers_v1.py; the rollout ==
the env: test_producers_envs.py; SB3's env checker: test_rl_sb3.py, over every env id.)"""
import json

import gymnasium as gym
import numpy as np
import pytest

import producers  # noqa: F401
from producers.rollout import PulsePolicy, episode_task
from stgym import cli

ARRAY_V1 = "SpinTorqueArray-v1"


def test_array_v1_policy_writes_toward_each_target_and_holds_off_the_others():
    policy = PulsePolicy(np.array([0.5, 1.0]), ARRAY_V1, {"num_devices": 2}, "cem",
                         stop_alignment=0.9)
    obs = np.zeros(12, np.float32)
    obs[[2, 5]] = [-0.99, 0.99]  # m·target: device 0 must flip, device 1 holds its bit
    obs[6:8] = [-1.0, 1.0]       # write directions (the policy does not need them)
    assert np.array_equal(policy(obs, 100), np.array([0.0, -1.0], np.float32))  # 2·0.5 − 1
    obs[2], obs[10] = 0.95, 0.01  # device 0 has written its bit (feedback stop): off
    assert np.array_equal(policy(obs, 100), np.array([-1.0, -1.0], np.float32))
    obs[2], obs[5], obs[10] = 0.5, -0.2, 0.01  # not a first observation: the mask stays
    assert np.array_equal(policy(obs, 100), np.array([1.0, -1.0], np.float32))


def test_array_v1_policy_pyfunc_model_loads_and_predicts_the_policy(tmp_path):
    import mlflow.pyfunc

    from producers.policy_model import save_policy_model

    kwargs = {"num_devices": 3}
    policy = PulsePolicy(np.concatenate([np.full(30, 0.9), np.full(10, 0.5)]), ARRAY_V1,
                         kwargs, "cem", stop_alignment=0.9)
    policy.save(tmp_path / "policy.json")
    save_policy_model(str(tmp_path / "policy.json"), str(tmp_path / "model"))
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 17)
    env = gym.make(ARRAY_V1, **kwargs)
    reference = PulsePolicy.load(tmp_path / "policy.json")
    max_steps = episode_task(ARRAY_V1, kwargs).max_steps
    obs, _ = env.reset(seed=3, options={"pattern": [1, -1, 1]})
    for _ in range(100):
        action = model.predict(obs[None, :])
        assert action.shape == (1, 3) and action.dtype == np.float32
        np.testing.assert_array_equal(action[0], reference(obs, max_steps))
        obs, reward, terminated, truncated, info = env.step(action[0])
        if terminated or truncated:
            break
    assert terminated and info["success"] and info["bit_errors"] == 0
    pulse = model.predict(obs[None, :], params={"output": "pulse"})
    np.testing.assert_allclose(pulse[0], policy.amplitudes, rtol=1e-6)
