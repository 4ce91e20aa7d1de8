"""PPO/SAC's rollouts on Ray actors for one learner (RayVecEnv): the in-process adapter's
observations bit for bit, a killed actor replaced without a lost, duplicate or half-run
episode on the bus, and `stgym train --algo ppo --ray-workers 2` = the in-process run."""
import os
import re
import signal

import numpy as np
import pytest
import ray

from producers.runner import train
from producers.train_config import TrainConfig
from producers.trainers import TrainerOptions
from producers.trainers.sb3_vecenv import NativeVecEnv, RayVecEnv
from stgym import events
from stgym.bus import MemoryBus

SHORT = {"time_budget": 2e-9}  # 20 steps: several autoresets in 60 steps


def actor_pid(envs, k):
    return ray.get(envs._actors[k].__ray_call__.remote(lambda self: os.getpid()))


def test_ray_copies_are_the_in_process_copies_bit_for_bit(ray_instance):
    copies, workers = 5, 2  # uneven slices: 3 + 2
    native, distributed = NativeVecEnv("SpinTorque-v1", copies, **SHORT), RayVecEnv(
        "SpinTorque-v1", copies, workers, **SHORT)
    try:
        assert [len(rows) for rows in distributed.slices] == [
            len(rows) for rows in np.array_split(np.arange(copies), workers)]
        assert len(set(distributed.workers)) == workers
        assert all(re.fullmatch(r"ray-[0-9a-f]{12}", w) for w in distributed.workers)
        native.seed(11)
        distributed.seed(11)
        assert np.array_equal(native.reset(), distributed.reset())
        actions = np.random.default_rng(4).uniform(-1, 1, (60, copies, 1)).astype(np.float32)
        ended = 0
        for action in actions:
            native.step_async(action)
            distributed.step_async(action)
            obs, rewards, dones, infos = native.step_wait()
            ray_obs, ray_rewards, ray_dones, ray_infos = distributed.step_wait()
            assert np.array_equal(obs, ray_obs) and np.array_equal(rewards, ray_rewards)
            assert np.array_equal(dones, ray_dones) and rewards.dtype == ray_rewards.dtype
            for i, (info, ray_info) in enumerate(zip(infos, ray_infos)):
                if not info:
                    assert ray_info == {}
                    continue
                ended += 1
                owner = next(k for k, rows in enumerate(distributed.slices) if i in rows)
                assert ray_info.pop("worker") == distributed.workers[owner]
                assert ray_info.pop("seed") == 11 + i
                terminal = info.pop("terminal_observation")
                assert np.array_equal(terminal, ray_info.pop("terminal_observation"))
                assert info.keys() == ray_info.keys()
                assert all(np.array_equal(info[k], ray_info[k], equal_nan=True) for k in info)
        assert ended >= 2 * copies
    finally:
        native.close()
        distributed.close()


def test_a_killed_actor_is_replaced_and_its_unfinished_episodes_dropped(ray_instance):
    envs = RayVecEnv("SpinTorque-v1", 4, 2, **SHORT)
    try:
        envs.seed(3)
        envs.reset()
        actions = np.full((4, 1), 0.5, np.float32)
        envs.step(actions)
        lost = envs.workers[1]
        os.kill(actor_pid(envs, 1), signal.SIGKILL)
        obs, rewards, dones, infos = envs.step(actions)
        # copies 2, 3 (actor 1's) end as truncated, no episode; copies 0, 1 go on
        assert dones.tolist() == [False, False, True, True]
        assert [i.get("worker_lost") for i in infos] == [None, None, True, True]
        assert all(i["TimeLimit.truncated"] and "success" not in i for i in infos[2:])
        assert rewards[2:].tolist() == [0.0, 0.0]
        assert envs.replacements == 1 and envs.workers[1] != lost
        # the replacement's copies run new episodes, seeded num_envs past their old seeds
        fresh = NativeVecEnv("SpinTorque-v1", 2, **SHORT)
        fresh.seed(3 + 4 + 2)
        assert np.array_equal(obs[2:], fresh.reset())
        seen = {}
        for _ in range(40):
            _, _, dones, infos = envs.step(actions)
            for i in np.flatnonzero(dones):
                seen[i] = (infos[i]["worker"], infos[i]["seed"])
        assert seen[0] == (envs.workers[0], 3) and seen[3] == (envs.workers[1], 3 + 4 + 3)
    finally:
        envs.close()


def episode_events(bus):
    return [events.decode(r.value, events.EpisodeEvent) for r in bus.records(events.TOPIC_EPISODES)]


def run_ppo(tmp_path, name, ray_workers, episodes=70, progress=None):
    bus = MemoryBus(f"ppo-{name}")
    config = TrainConfig(algorithm="ppo", env_id="SpinTorque-v1", episodes=episodes, seed=1,
                         experiment=f"ppo-{name}", options=TrainerOptions(batch_size=32),
                         run_dir=str(tmp_path / name), ray_workers=ray_workers)
    return train(config, bus=bus, progress=progress), episode_events(bus)


def test_ppo_on_two_ray_workers_runs_the_in_process_episodes(ray_instance, tmp_path):
    local, local_events = run_ppo(tmp_path, "local", 0)
    distributed, ray_events = run_ppo(tmp_path, "ray", 2)
    assert distributed.ok and distributed.episodes == 70
    assert len({e.event_id for e in ray_events}) == 70
    same = ("episode", "seed", "success", "energy_j", "steps", "total_reward", "sim_steps")
    assert [[getattr(e, f) for f in same] for e in ray_events] == [
        [getattr(e, f) for f in same] for e in local_events]
    assert {e.worker_id for e in local_events} == {"w0"}
    assert all(re.fullmatch(r"w0\.ray-[0-9a-f]{12}", e.worker_id) for e in ray_events)
    assert len({e.worker_id for e in ray_events}) == 2
    assert distributed.success_rate == local.success_rate


def test_ppo_finishes_when_an_actor_is_killed_mid_run(ray_instance, tmp_path):
    """Killed after the first published batch: the run finishes with its exact budget on the
    bus, each episode once, the later ones from the replacement worker."""
    killed = []

    def kill_one(progress):
        if not killed:  # the newest actor: one of this run's two
            killed.append(max(_actor_processes(), key=lambda p: p.create_time()).pid)
            os.kill(killed[0], signal.SIGKILL)

    summary, published = run_ppo(tmp_path, "killed", 2, episodes=160, progress=kill_one)
    assert killed and summary.ok and summary.episodes == 160
    assert [e.episode for e in published] == list(range(160))
    assert len({e.event_id for e in published}) == 160
    assert len({e.worker_id for e in published}) == 3  # two workers, one replacement
    ledger = (tmp_path / "killed" / "worker-0.ledger").read_text().split()
    assert ledger == [e.event_id for e in published]


def _actor_processes():
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if any(part.startswith("ray::VectorCopiesActor") for part in p.info["cmdline"] or [])]


def test_more_workers_than_the_cluster_has_cpus_is_a_clear_error(ray_instance):
    with pytest.raises(ValueError, match="4 Ray workers of one CPU each, but the Ray cluster "
                                         "has 2 CPUs"):
        RayVecEnv("SpinTorque-v1", 8, 4)


def test_sb3_counts_the_published_episodes_when_an_actor_is_lost(ray_instance):
    """A lost actor's dropped copies end no episode in SB3's episode log (`EpisodeMonitor`:
    infos' "episode", ep_info_buffer, episode_count) nor in SAC's episode counter: each
    counts exactly the episodes published."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    from producers.trainers.sb3 import PublishingCallback
    from producers.trainers.sb3_vecenv import make_vec_env

    envs = make_vec_env("SpinTorque-v1", 4, seed=3, ray_workers=2, **SHORT)
    published = []

    class Reporter:
        def episodes(self, batch):
            published.extend(batch.seeds)

        def iteration(self, progress):
            pass

    class KillOne(BaseCallback):
        def _on_step(self):
            if self.n_calls == 5:  # mid-episode (20 steps each)
                os.kill(actor_pid(envs.venv, 1), signal.SIGKILL)
            return True

    try:
        model = SAC("MlpPolicy", envs, learning_starts=10**6, seed=0, device="cpu")
        model.learn(4 * 60, callback=CallbackList([
            KillOne(), PublishingCallback(Reporter(), 10**6, batch_size=1, seed=3)]))
        assert envs.venv.replacements == 1
        assert len(published) >= 8
        assert envs.episode_count == len(model.ep_info_buffer) == model._episode_num == len(
            published)
    finally:
        envs.close()
