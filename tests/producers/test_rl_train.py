"""`stgym train --algo ppo|sac`: stable-baselines3 agents publish like the pulse trainers
(memory bus), save their model, and a missing extra is a one-line install hint."""
import math
import sys

import numpy as np
import pytest
from stable_baselines3 import PPO

from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions, sb3
from stgym import events
from stgym.bus import MemoryBus
from stgym.errors import UserError


@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_agent_publishes_exactly_its_episode_budget_and_saves_its_model(algorithm, tmp_path):
    bus = MemoryBus(f"test-{algorithm}")
    config = TrainConfig(algorithm=algorithm, env_id="SpinTorque-v1", episodes=70, seed=1,
                         experiment=f"t-{algorithm}", options=TrainerOptions(batch_size=32),
                         run_dir=str(tmp_path))
    summary = train(config, bus=bus)
    assert summary.ok and summary.episodes == 70
    episodes = [events.decode(r.value, events.EpisodeEvent)
                for r in bus.records(events.TOPIC_EPISODES)]
    assert [e.episode for e in episodes] == list(range(70))
    assert len({e.event_id for e in episodes}) == 70
    assert {e.algorithm for e in episodes} == {algorithm}
    assert all(1 <= e.steps <= 100 and e.sim_steps == 100 * e.steps for e in episodes)
    assert all(math.isfinite(e.total_reward) and e.wall_time_s > 0 for e in episodes)
    ledger = (tmp_path / "worker-0.ledger").read_text().split()
    assert ledger == [e.event_id for e in episodes]
    training = [events.decode(r.value, events.TrainingEvent)
                for r in bus.records(events.TOPIC_TRAINING)]
    assert [t.iteration for t in training] == [1, 2, 3]  # 32 + 32 + 6 episodes
    statuses = [events.decode(r.value, events.ExperimentEvent).status
                for r in bus.records(events.TOPIC_EXPERIMENTS)]
    assert statuses == ["started", "finished"]
    assert summary.policy_path == str(tmp_path / "model-w0.zip")
    model = sb3.AGENTS[algorithm].load(summary.policy_path, device="cpu")
    action, _ = model.predict(np.zeros((1, 7), np.float32), deterministic=True)
    assert action.shape == (1, 1)


def test_hyperparameters_file_has_every_agent():
    for algorithm in sb3.AGENTS:
        params = sb3.hyperparameters(algorithm, "SpinTorqueSOT-v1")
        assert params["n_envs"] >= 1 and params["policy"] == "MlpPolicy"
    assert sb3.hyperparameters("ppo", "SpinTorque-v1")["n_steps"] > 0
    assert PPO  # the extra is installed where this file runs


def test_without_the_rl_extra_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "producers.trainers.sb3", None)  # import fails
    with pytest.raises(UserError, match=r"pip install '\.\[rl\]'"):
        TrainConfig(algorithm="ppo", env_id="SpinTorque-v1").validate()
