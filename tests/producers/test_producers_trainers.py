"""Trainers, the in-process runner, the published events, policies and the CLI (memory bus)."""
import json
import urllib.request

import gymnasium as gym
import numpy as np
import pytest

import producers  # noqa: F401
from producers.evaluation import run_episodes, wer_upper_bound
from producers.rollout import PulsePolicy, episode_task
from producers.runner import train
from producers.train_config import TrainConfig
from producers.worker_metrics import WorkerMetrics
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


@pytest.mark.parametrize("env_id, episodes", [("SpinTorque-v0", 640), ("SpinTorqueArray-v0", 320)])
def test_trainers_beat_random_within_a_small_budget(env_id, episodes):
    task = episode_task(env_id)
    options = TrainerOptions(batch_size=64)

    class Quiet:
        def episodes(self, batch):
            pass

        def iteration(self, progress):
            pass

    scores = {}
    for name, cls in TRAINERS.items():
        trainer = cls(task, options, np.random.default_rng(0))
        pulse = trainer.run(episodes, Quiet())
        batch = run_episodes(task, pulse, 256, seed=99, stop_alignment=trainer.best_stop())
        scores[name] = (batch.success_rate, trainer.episode_scores(batch).mean())
    for name in ("constant", "cem", "reinforce"):
        assert scores[name][0] >= scores["random"][0] + 0.3, scores
        assert scores[name][1] > scores["random"][1], scores


def fake_batch(n, successes, energy_j):
    from producers.rollout import EpisodeBatch

    success = np.arange(n) < successes
    zeros = np.zeros(n)
    return EpisodeBatch(
        seeds=np.arange(n), success=success, energy_j=np.full(n, energy_j),
        switching_time_s=zeros, steps=zeros.astype(int), sim_steps=zeros.astype(int),
        total_reward=zeros, wall_time_s=zeros, actions=np.zeros((n, 1)),
    )


@pytest.mark.parametrize("threshold, tail_failures", [(13, 0), (40, 0), (7, 1)])
def test_shortest_pulse_search_finds_the_shortest_certified_duration(threshold, tail_failures):
    """Levels >= threshold fail only `tail_failures` per certification batch (certification:
    6 / 0.05 = 120 episodes without a failure)."""
    from producers.trainers.certify import ShortestPulse

    search = ShortestPulse(lambda level: np.full(1, level), 40, wer_target=0.05)
    assert (search.screen_episodes, search.certify_episodes) == (8, 120)
    while not search.done:
        level = int(search.propose(1)[0, 0])
        n = 20 if search.certifying else 8
        ok = level >= threshold
        failures = tail_failures if (ok and search.certifying) else (0 if ok else n)
        search.record(fake_batch(n, n - failures, energy_j=level * 1e-15))
    if tail_failures:
        assert search.result is None
    else:
        assert search.result["level"] == threshold
        assert search.result["energy_per_switch_j"] == pytest.approx(threshold * 1e-15)
        assert search.result["episodes"] == 120 and search.result["failures"] == 0


def test_constant_baseline_reports_the_cheapest_certified_pulse():
    task = gym.make("SpinTorque-v0").unwrapped.task
    trainer = TRAINERS["constant"](task, TrainerOptions(), np.random.default_rng(1))
    trainer.certified = [
        {"amplitude": 1.0, "duration": 40, "episodes": 5000, "failures": 1,
         "write_error_rate": 2e-4, "energy_per_switch_j": 2e-13},
        {"amplitude": 0.7, "duration": 70, "episodes": 5000, "failures": 2,
         "write_error_rate": 4e-4, "energy_per_switch_j": 1.5e-13},
    ]
    assert list(trainer.best_pulse()[:71]) == [0.7] * 70 + [0.0]
    summary = trainer.summary()
    assert summary["amplitude"] == 0.7 and summary["meets_wer_target"]
    assert summary["duration_s"] == pytest.approx(7e-9)


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
    (["train", "--env", "CartPole-v1"], "--env"),
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
