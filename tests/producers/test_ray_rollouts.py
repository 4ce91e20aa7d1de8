"""One learner over Ray workers: the rollouts are the local ones bit for bit, a killed worker's
share is re-run, and CEM over 2 Ray workers learns exactly the policy of one process."""
import re
import signal
import threading
import time

import gymnasium as gym
import numpy as np
import psutil
import pytest

import producers  # noqa: F401
from producers.ray_rollouts import RayRollouts
from producers.rollout import rollout
from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions
from stgym import events
from stgym.bus import MemoryBus


def batches_equal(a, b):
    """The same episodes (where and how long they ran aside)."""
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
               for f in a.__dataclass_fields__ if f not in ("wall_time_s", "workers"))


def episodes(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.3, 1, (n, 80)), rng.integers(0, 2**63, n, dtype=np.int64),
            np.full(n, 0.9))


def test_ray_rollouts_are_the_local_rollout_bit_for_bit(ray_instance):
    task = gym.make("SpinTorque-v1").unwrapped.task
    pulses, seeds, stops = episodes(101)
    distributed, local = RayRollouts(2)(task, pulses, seeds, stops), rollout(task, pulses, seeds, stops)
    assert batches_equal(distributed, local)
    assert local.workers is None  # the learner's own episodes
    # each share (episodes 0, 2, ... and 1, 3, ...: 51 + 50) names the Ray worker that ran it
    assert len(set(distributed.workers[0::2])) == len(set(distributed.workers[1::2])) == 1
    assert all(re.fullmatch(r"ray-[0-9a-f]{12}", w) for w in distributed.workers)


def test_a_killed_workers_share_is_run_again_with_the_same_episodes(ray_instance):
    task = gym.make("SpinTorque-v1").unwrapped.task
    pulses, seeds, stops = episodes(3000, seed=1)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(batch=RayRollouts(2)(task, pulses, seeds, stops)))
    worker.start()
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if any("ray::_share" in part for part in process.info["cmdline"] or []):
                process.send_signal(signal.SIGKILL)
                killed = process.pid
                break
        time.sleep(0.05)
    worker.join(300)
    assert killed is not None, "no Ray task process seen"
    assert batches_equal(result["batch"], rollout(task, pulses, seeds, stops))


def run_cem(ray_workers):
    bus = MemoryBus(f"cem-ray{ray_workers}")
    config = TrainConfig(algorithm="cem", env_id="SpinTorque-v1", episodes=640, seed=5,
                         experiment=f"ray{ray_workers}", ray_workers=ray_workers,
                         options=TrainerOptions(batch_size=128))
    summary = train(config, bus=bus)
    ids = [events.decode(r.value, events.EpisodeEvent).event_id
           for r in bus.records(events.TOPIC_EPISODES)]
    return summary, ids


def test_cem_over_two_ray_workers_learns_the_one_process_policy(ray_instance):
    local, _ = run_cem(0)
    distributed, ids = run_cem(2)
    assert distributed.ok and len(ids) == len(set(ids)) == 640
    assert distributed.success_rate == local.success_rate
    assert distributed.energy_per_switch_j == local.energy_per_switch_j


def test_episode_events_carry_the_ray_worker_that_ran_them(ray_instance):
    """Exactly once on the bus, each episode with its Ray worker's id after the learner's;
    the learner's training and experiment events keep the learner's id."""
    bus = MemoryBus("cem-ray-ids")
    config = TrainConfig(algorithm="cem", env_id="SpinTorque-v1", episodes=256, seed=2,
                         experiment="ray-ids", ray_workers=2,
                         options=TrainerOptions(batch_size=128, validation_episodes=0))
    assert train(config, bus=bus).ok
    episodes = [events.decode(r.value, events.EpisodeEvent)
                for r in bus.records(events.TOPIC_EPISODES)]
    assert [e.episode for e in episodes] == list(range(256))
    assert len({e.event_id for e in episodes}) == 256
    assert all(re.fullmatch(r"w0\.ray-[0-9a-f]{12}", e.worker_id) for e in episodes)
    for start in (0, 128):  # each iteration's episodes dealt to its two shares in turn
        block = [e.worker_id for e in episodes[start:start + 128]]
        assert len(set(block[0::2])) == len(set(block[1::2])) == 1
    others = [events.decode(r.value, kind) for topic, kind in (
        (events.TOPIC_TRAINING, events.TrainingEvent),
        (events.TOPIC_EXPERIMENTS, events.ExperimentEvent)) for r in bus.records(topic)]
    assert others and {e.worker_id for e in others} == {"w0"}


@pytest.mark.parametrize("kwargs, message", [
    ({"ray_workers": 2, "workers": 2}, "one learner"),
    ({"ray_address": "head:6379"}, "--ray-workers must be >= 1"),
    ({"ray_workers": -1}, "--ray-workers must be >= 1"),
])
def test_ray_options_that_do_not_fit_are_one_line_errors(kwargs, message):
    from stgym.errors import UserError

    with pytest.raises(UserError, match=message):
        TrainConfig(**{"env_id": "SpinTorque-v1", **kwargs}).validate()
