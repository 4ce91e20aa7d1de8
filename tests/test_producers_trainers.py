"""Trainers, the in-process runner, the published events, policies and the CLI (memory bus)."""
import json
import urllib.request

import gymnasium as gym
import numpy as np
import pytest

import producers  # noqa: F401
from producers.evaluation import run_episodes, wer_upper_bound
from producers.rollout import PulsePolicy
from producers.runner import TrainConfig, WorkerMetrics, train
from producers.trainers import TRAINERS, TrainerOptions
from stgym import cli, events
from stgym.bus import MemoryBus


def run(algorithm, episodes=192, workers=2, tmp_path=None, **options):
    bus = MemoryBus(f"test-{algorithm}")
    config = TrainConfig(
        algorithm=algorithm, episodes=episodes, workers=workers, experiment=f"t-{algorithm}",
        seed=3, options=TrainerOptions(**options), run_dir=str(tmp_path) if tmp_path else None,
        policy_out=str(tmp_path / "policy.json") if tmp_path else None,
    )
    progress = []
    summary = train(config, bus=bus, progress=progress.append)
    return bus, summary, progress


@pytest.mark.parametrize("algorithm", sorted(TRAINERS))
def test_every_episode_becomes_one_valid_event(algorithm, tmp_path):
    bus, summary, progress = run(algorithm, tmp_path=tmp_path, batch_size=32)
    assert summary.ok and summary.episodes == 192
    episodes = [events.decode(r.value, events.EpisodeEvent) for r in bus.records(events.TOPIC_EPISODES)]
    assert len(episodes) == 192 and len({e.event_id for e in episodes}) == 192
    for run_id in summary.run_ids:
        mine = [e for e in episodes if e.run_id == run_id]
        assert [e.episode for e in mine] == list(range(96))
        assert all(r.key == run_id.encode() for r in bus.records(events.TOPIC_EPISODES)
                   if r.value in {events.encode(e) for e in mine})
    ledgers = sorted(tmp_path.glob("worker-*.ledger"))
    assert {line for p in ledgers for line in p.read_text().split()} == {e.event_id for e in episodes}
    assert all(e.algorithm == algorithm and e.device_type == "stt-pma" for e in episodes)
    assert sum(e.success for e in episodes) / 192 == pytest.approx(summary.success_rate)
    training = [events.decode(r.value, events.TrainingEvent) for r in bus.records(events.TOPIC_TRAINING)]
    assert len(training) == 6 and all(0 <= t.model_accuracy <= 1 for t in training)
    statuses = [events.decode(r.value, events.ExperimentEvent).status
                for r in bus.records(events.TOPIC_EXPERIMENTS)]
    assert sorted(statuses) == ["finished", "finished", "started", "started"]
    assert progress[-1].episodes == 192
    policy = PulsePolicy.load(tmp_path / "policy.json")
    assert policy.algorithm == algorithm and len(policy.amplitudes) == TrainerOptions().segments


def test_trainers_beat_random_within_a_small_budget():
    task = gym.make("SpinTorque-v0").unwrapped.task
    options = TrainerOptions(batch_size=64)

    class Quiet:
        def episodes(self, batch):
            pass

        def iteration(self, progress):
            pass

    scores = {}
    for name, cls in TRAINERS.items():
        trainer = cls(task, options, np.random.default_rng(0))
        pulse = trainer.run(640, Quiet())
        batch = run_episodes(task, pulse, 256, seed=99)
        scores[name] = (batch.success_rate, trainer.episode_scores(batch).mean())
    for name in ("constant", "cem", "reinforce"):
        assert scores[name][0] >= scores["random"][0] + 0.3, scores
        assert scores[name][1] > scores["random"][1], scores


def test_constant_baseline_picks_the_cheapest_pulse_meeting_the_target():
    task = gym.make("SpinTorque-v0").unwrapped.task
    trainer = TRAINERS["constant"](task, TrainerOptions(wer_target=0.05), np.random.default_rng(1),
                                   grid=[(1.0, 40), (0.6, 40), (0.3, 5)])
    trainer.plan(3 * 100)
    trainer.runs[:] = [100, 100, 100]
    trainer.failures[:] = [0, 4, 100]
    trainer.energy_sum[:] = [100 * 9e-14, 96 * 5e-14, 0]
    assert trainer.best_point() == 1
    summary = trainer.summary()
    assert summary["amplitude"] == 0.6 and summary["meets_wer_target"]
    assert summary["energy_per_switch_j"] == pytest.approx(5e-14)


def test_policy_round_trip_and_acts_toward_the_target(tmp_path):
    policy = PulsePolicy(np.array([0.5, 1.0]), "SpinTorque-v0", {"temperature": 0.0}, "cem", {"x": 1})
    policy.save(tmp_path / "p.json")
    loaded = PulsePolicy.load(tmp_path / "p.json")
    assert np.array_equal(loaded.amplitudes, policy.amplitudes) and loaded.metrics == {"x": 1}
    obs = np.zeros((3, 9), np.float32)
    obs[:, 5] = [-1, 1, -1]
    obs[:, 7] = [0.0, 0.01, 0.5]
    assert np.allclose(loaded(obs, 100)[:, 0], [0.5, -1.0, 0.0])


def test_wer_upper_bound():
    assert wer_upper_bound(0, 3000) == pytest.approx(1 - 0.05 ** (1 / 3000))
    assert 0.01 < wer_upper_bound(10, 1000) < 0.02


def test_cli_train_and_evaluate(tmp_path, capsys):
    policy = tmp_path / "cem.json"
    code = cli.main([
        "train", "--algo", "cem", "--episodes", "96", "--workers", "2", "--experiment", "cli-t",
        "--bus", "memory", "--metrics-port", "-1", "--policy-out", str(policy), "--json",
        "--run-dir", str(tmp_path),
    ])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["episodes"] == 96 and summary["failed_workers"] == []
    assert summary["policy_path"] == str(policy)
    code = cli.main(["evaluate", str(policy), "--episodes", "64", "--temperature", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["episodes"] == 64 and report["temperature_k"] == 0.0
    assert report["write_error_rate"] == pytest.approx(1 - report["success_rate"])


@pytest.mark.parametrize("argv, message", [
    (["train", "--algo", "dqn"], "--algo"),
    (["train", "--env", "SpinTorqueArray-v0"], "--env"),
    (["train", "--episodes", "0"], "--episodes"),
    (["train", "--bus", "rabbit://x", "--episodes", "1"], "bus URL"),
    (["evaluate", "/nonexistent/policy.json"], "policy file"),
])
def test_cli_user_errors_are_one_line_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_worker_metrics_endpoint(unique_id):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = WorkerMetrics(port, "127.0.0.1", {"experiment": unique_id,
                                                "device_type": "stt-pma", "algorithm": "cem"})
    try:
        metrics.update(1234.0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        metrics.close()
    assert 'memory_usage_bytes{service="stgym-trainer"}' in body
    assert (f'simulation_steps_per_second{{algorithm="cem",device_type="stt-pma",'
            f'experiment="{unique_id}"}} 1234.0') in body
