"""Training on SpinTorqueArray-v0: runner, events, CLI, argument errors, the array policy.

(The rollout-equals-env and beats-random tests cover the array in test_producers_envs.py and
test_producers_trainers.py, parametrised over the envs.)"""
import json

import numpy as np
import pytest

import producers  # noqa: F401
from producers.rollout import PulsePolicy
from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions
from stgym import cli, events
from stgym.bus import MemoryBus

ARRAY = "SpinTorqueArray-v0"


def test_runner_publishes_array_episodes_with_the_array_device_type(tmp_path):
    bus = MemoryBus("test-array")
    config = TrainConfig(
        algorithm="cem", env_id=ARRAY, env_kwargs={"num_devices": 2}, episodes=64, workers=2,
        experiment="t-array", options=TrainerOptions(batch_size=16), run_dir=str(tmp_path),
    )
    summary = train(config, bus=bus)
    assert summary.ok and summary.episodes == 64
    episodes = [events.decode(r.value, events.EpisodeEvent) for r in bus.records(events.TOPIC_EPISODES)]
    assert len(episodes) == 64 and {e.device_type for e in episodes} == {"stt-pma-array2"}
    assert sum(e.success for e in episodes) / 64 == pytest.approx(summary.success_rate)
    won = [e for e in episodes if e.success]
    bits = sum(e.energy_j for e in won) / summary.energy_per_bit_j  # bits the successes wrote
    assert bits == pytest.approx(round(bits), rel=1e-9) and 0 < round(bits) <= 2 * len(won)
    policy = PulsePolicy.load(summary.policy_path)
    assert policy.env_id == ARRAY and policy.env_kwargs == {"num_devices": 2}
    runs = [events.decode(r.value, events.ExperimentEvent)
            for r in bus.records(events.TOPIC_EXPERIMENTS)]
    assert len(runs) == 4 and all(json.loads(r.config["env_kwargs"]) == {"num_devices": 2}
                                  and r.device_type == "stt-pma-array2" for r in runs)


def test_cli_train_and_evaluate_the_array(tmp_path, capsys):
    policy = tmp_path / "array.json"
    code = cli.main([
        "train", "--algo", "cem", "--env", ARRAY, "--episodes", "64", "--workers", "2",
        "--bus", "memory", "--metrics-port", "-1", "--policy-out", str(policy),
        "--run-dir", str(tmp_path), "--batch-size", "16",
    ])
    out = capsys.readouterr().out
    assert code == 0 and "energy / bit" in out and "cem on SpinTorqueArray-v0" in out
    code = cli.main(["evaluate", str(policy), "--episodes", "32", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["episodes"] == 32 and report["devices"] == 4
    assert report["env_id"] == ARRAY and report["write_error_rate"] == pytest.approx(
        1 - report["success_rate"])


def test_cli_env_kwargs_size_and_couple_the_array(tmp_path, capsys):
    policy = tmp_path / "array.json"
    code = cli.main([
        "train", "--algo", "random", "--env", ARRAY, "--episodes", "16", "--bus", "memory",
        "--metrics-port", "-1", "--policy-out", str(policy), "--run-dir", str(tmp_path),
        "--env-kwargs", '{"num_devices": 6, "dipolar_coupling": true}',
    ])
    capsys.readouterr()
    assert code == 0
    code = cli.main(["evaluate", str(policy), "--episodes", "8", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["devices"] == 6 and report["dipolar_coupling"] is True


@pytest.mark.parametrize("argv, message", [
    (["--env-kwargs", "[6]"], "expected a JSON object"),
    (["--env-kwargs", "{num_devices: 6}"], "not JSON"),
    (["--env-kwargs", '{"num_devices": 0}'], "num_devices must be >= 1"),
])
def test_cli_bad_env_kwargs_are_one_line_errors(argv, message, capsys):
    code = cli.main(["train", "--env", ARRAY, "--episodes", "4", "--bus", "memory", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("env_kwargs, message", [
    ({"num_devices": 0}, "num_devices"),
    ({"dipolar_coupling": True, "pitch": 1e-9}, "pitch"),
    ({"colour": "red"}, "colour"),
])
def test_bad_array_arguments_are_user_errors(env_kwargs, message):
    from stgym.errors import UserError

    with pytest.raises(UserError, match=message):
        TrainConfig(env_id=ARRAY, env_kwargs=env_kwargs).validate()


def test_array_policy_drives_only_the_devices_that_must_flip():
    policy = PulsePolicy(np.array([0.5, 1.0]), ARRAY, {"num_devices": 2}, "cem",
                         stop_alignment=0.9)
    obs = np.zeros(12, np.float32)
    obs[[2, 5]] = [0.99, 0.99]  # both devices at +z
    obs[6:8] = [-1.0, 1.0]      # device 0 must write -z, device 1 holds its bit
    assert np.array_equal(policy(obs, 100), np.array([0.5, 0.0], np.float32))
    obs[2], obs[10] = -0.95, 0.01  # device 0 has written its bit (feedback stop)
    assert np.array_equal(policy(obs, 100), np.zeros(2, np.float32))
    obs[2], obs[5], obs[10] = 0.5, -0.2, 0.01  # not a first observation: the mask stays
    assert np.array_equal(policy(obs, 100), np.array([1.0, 0.0], np.float32))
