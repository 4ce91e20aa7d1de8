"""`stgym bench ray`: one CEM learner whose generations run on K = 1 and K = 2 Ray workers (one
CPU each), the same episode budget and seed: wall time ratio (goal ≥ 1.7× less at K = 2) and
the policies' quality on the same 10,000 evaluation episodes (seed 2026; 2,000 with --quick).
The episodes, hence the policies, are identical by construction (tests/producers/
test_ray_rollouts.py); the bench shows it on the evaluation and measures the time. On a
machine shared with other work the ratio measures the share of the cores it got, not Ray.
Needs the rl extra.
"""
from __future__ import annotations

import json
import time

import numpy as np

EVAL_SEED = 2026


def main(args) -> int:
    from producers.bench import CEM_EPISODES, _jsonable

    quick = bool(getattr(args, "quick", False))
    episodes, evaluation_episodes = (8000, 2000) if quick else (CEM_EPISODES, 10000)
    results = {"episodes": episodes, "evaluation_episodes": evaluation_episodes}
    for workers in (1, 2):
        results[f"k{workers}"] = run(workers, episodes, evaluation_episodes)
    results["wall_time_ratio_k1_over_k2"] = (results["k1"]["training_wall_time_s"]
                                             / results["k2"]["training_wall_time_s"])
    results["same_policy"] = results["k1"]["pulse"] == results["k2"]["pulse"]
    results["goal"] = "k2 >= 1.7x faster than k1, same quality"
    if getattr(args, "json", False):
        print(json.dumps(results, indent=2, default=_jsonable))
    else:
        for k in ("k1", "k2"):
            row = results[k]
            print(f"CEM on {k[1]} Ray worker(s): {row['training_wall_time_s']:.1f} s for "
                  f"{episodes:,} episodes; success {row['success_rate']:.4%}, energy/switch "
                  f"{(row['energy_per_switch_j'] or float('nan')) * 1e15:.1f} fJ on "
                  f"{evaluation_episodes:,} episodes")
        print(f"k1 / k2 wall time {results['wall_time_ratio_k1_over_k2']:.2f}x (goal >= 1.7x); "
              f"same policy: {results['same_policy']}")
    return 0


def run(workers: int, episodes: int, evaluation_episodes: int) -> dict:
    import gymnasium as gym

    import producers  # noqa: F401
    from producers.evaluation import describe, run_episodes
    from producers.ray_rollouts import RayRollouts
    from producers.trainers import TRAINERS, TrainerOptions

    class Quiet:
        def episodes(self, batch):
            pass

        def iteration(self, progress):
            pass

    task = gym.make("SpinTorque-v1").unwrapped.task
    cem = TRAINERS["cem"](task, TrainerOptions(), np.random.default_rng(8))
    cem.rollout = RayRollouts(workers)
    try:
        started = time.perf_counter()
        pulse = cem.run(episodes, Quiet())
        wall = time.perf_counter() - started
    finally:
        cem.rollout.close()
    started = time.perf_counter()
    batch = run_episodes(task, pulse, evaluation_episodes, EVAL_SEED, cem.best_stop())
    return describe(batch, task, time.perf_counter() - started) | {
        "training_wall_time_s": wall, "pulse": [round(float(a), 6) for a in pulse],
    }
