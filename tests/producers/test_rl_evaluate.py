"""`stgym evaluate MODEL.zip`: an SB3 agent saved by `stgym train --algo ppo|sac` is scored on
the same evaluation episodes, with the same statistics, as a pulse policy."""
import json

import numpy as np
import pytest

from producers.evaluation import evaluate_policy, wer_upper_bound
from producers.rollout import PulsePolicy
from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions, sb3
from stgym import cli
from stgym.bus import MemoryBus


def _trained(algorithm, tmp_path):
    """A tiny agent (70 episodes, a few thousand env steps): only the mechanics matter."""
    config = TrainConfig(algorithm=algorithm, env_id="SpinTorque-v1", episodes=70, seed=3,
                         experiment=f"eval-{algorithm}", options=TrainerOptions(batch_size=35),
                         run_dir=str(tmp_path / "run"))
    summary = train(config, bus=MemoryBus(f"eval-{algorithm}"))
    assert summary.ok and summary.policy_path.endswith(".zip")
    return summary.policy_path


@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_evaluate_scores_an_sb3_model_like_a_pulse_policy(algorithm, tmp_path, capsys):
    model_path = _trained(algorithm, tmp_path)
    assert cli.main(["evaluate", model_path, "--episodes", "40", "--seed", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    pulse = PulsePolicy(np.ones(40), "SpinTorque-v1", {}, "constant")
    assert set(report) == set(evaluate_policy(pulse, 40, seed=7))  # the same statistics

    assert report["algorithm"] == algorithm and report["env_id"] == "SpinTorque-v1"
    assert report["episodes"] == 40 and report["temperature_k"] == 300.0
    failures = round(report["write_error_rate"] * 40)
    assert report["write_error_rate"] == pytest.approx(1 - report["success_rate"])
    assert report["write_error_rate_95_upper"] == pytest.approx(wer_upper_bound(failures, 40))
    assert 1 <= report["mean_episode_steps"] <= 100
    # the evaluation episodes are seed_chunks(40, 7), played by the deterministic policy
    batch = sb3.evaluate_agent(sb3.AGENTS[algorithm].load(model_path, device="cpu"),
                               "SpinTorque-v1", 40, 7)
    assert report["success_rate"] == batch.success_rate
    assert report["mean_episode_steps"] == float(batch.steps.mean())
    if batch.success.any():
        assert report["energy_per_switch_j"] == batch.energy_per_switch_j

    assert cli.main(["evaluate", model_path, "--episodes", "8", "--temperature", "0",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["temperature_k"] == 0.0


def test_a_zip_that_is_not_an_stgym_model_is_a_one_line_error(tmp_path, capsys):
    import gymnasium as gym

    foreign = tmp_path / "foreign.zip"
    sb3.AGENTS["ppo"]("MlpPolicy", gym.make("SpinTorque-v1"), n_steps=64, batch_size=64,
                      device="cpu").save(foreign)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    for path, message in ((foreign, "not saved by stgym train"),
                          (broken, "cannot read it as an SB3 model zip")):
        assert cli.main(["evaluate", str(path), "--episodes", "4"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and str(path) in err and len(err.splitlines()) == 1
