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


def test_cem_on_array_v1_through_the_cli_writes_fresh_patterns(tmp_path, capsys):
    """`stgym train --env SpinTorqueArray-v1` and `stgym evaluate` of its policy. CEM on 1,024
    episodes of 4 devices, evaluated on 1,000 fresh ones: 95.0-99.5 % over seeds 0-3 (docs/rl.md;
    99.99 % of 10,000 after 60,000 episodes), so at least 93 %."""
    policy = tmp_path / "array-v1.json"
    code = cli.main([
        "train", "--algo", "cem", "--env", ARRAY_V1, "--episodes", "1024", "--seed", "1",
        "--bus", "memory", "--metrics-port", "-1", "--mlflow", "off",
        "--policy-out", str(policy), "--run-dir", str(tmp_path),
    ])
    out = capsys.readouterr().out
    assert code == 0 and f"cem on {ARRAY_V1}" in out and "energy / bit" in out
    assert PulsePolicy.load(policy).env_id == ARRAY_V1
    code = cli.main(["evaluate", str(policy), "--episodes", "1000", "--seed", "77", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["env_id"] == ARRAY_V1 and report["devices"] == 4
    assert report["success_rate"] >= 0.93, report
    assert 40e-15 < report["energy_per_bit_j"] < 150e-15  # CEM's 66-74 fJ per written bit


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sb3_agents_on_the_array_are_a_one_line_error(algo, capsys):
    assert cli.main(["train", "--algo", algo, "--env", ARRAY_V1, "--episodes", "8",
                     "--bus", "memory", "--metrics-port", "-1", "--mlflow", "off"]) == 2
    err = capsys.readouterr().err
    assert "native vector env" in err and len(err.strip().splitlines()) == 1
