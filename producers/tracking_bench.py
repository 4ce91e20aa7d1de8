"""`stgym bench tracking`: what MLflow tracking costs a training, measured in the same run.

The same training (cem, 2 workers, in-process memory bus, same seed) runs with tracking off
and on, in `REPEATS` pairs (off first in one pair, on first in the next). The overhead is the
median over the pairs of on / off wall time - 1 (a neighbour's burst hits one pair, not the
median); the ratio of the summed process CPU times (all threads: the trainers and the
tracking thread) is reported beside it, as on a shared machine it moves less than wall time.
A tracked run's time includes everything tracking adds to `train()`: the worker-side metrics,
the background thread's log_batch calls during the training, and queueing its end; the time
the thread then takes to send the summary, artifacts and model (`wait_all`, at exit for the
CLI) is reported apart. Tracking goes to the tracking server (settings.mlflow_url) when it
answers, else to a local SQLite store in a temporary directory. Goal: overhead <= 3 % of the
training's wall time. The one-time cost of a `stgym train` process (importing MLflow) is
reported apart.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time

EPISODES = 30_000
REPEATS = 5
GOAL = 0.03


def _server_answers(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/health", timeout=2).text.strip() == "OK"
    except requests.RequestException:
        return False


def _timed_train(episodes: int, mlflow: str, experiment: str, run_dir: str) -> tuple:
    """(wall s, process CPU s, MLflow run id, s the tracking thread went on after it) of one
    training."""
    from producers import tracking
    from producers.runner import train
    from producers.train_config import TrainConfig
    from stgym.bus import MemoryBus

    config = TrainConfig(algorithm="cem", episodes=episodes, workers=2, experiment=experiment,
                         seed=11, run_dir=run_dir, mlflow=mlflow)
    bus = MemoryBus(f"{experiment}-{mlflow[:4]}-{time.monotonic_ns()}")
    started, cpu = time.perf_counter(), time.process_time()
    summary = train(config, bus=bus)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    tracking.wait_all()  # not timed: the end of the run in MLflow, after the training
    after = time.perf_counter() - started - wall
    if not summary.ok:
        raise RuntimeError(f"bench training failed: {summary.failed_workers}")
    return wall, cpu, summary.mlflow_run_id or "", after


def _import_seconds() -> float:
    code = ("import time; t = time.perf_counter(); import mlflow.pyfunc; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(episodes: int, repeats: int) -> dict:
    from stgym import settings as settings_module

    settings = settings_module.load()
    with tempfile.TemporaryDirectory(prefix="stgym-bench-tracking-") as tmp:
        uri = (settings.mlflow_url if _server_answers(settings.mlflow_url)
               else f"sqlite:///{tmp}/mlflow.sqlite3")
        experiment = f"bench-tracking-{time.strftime('%Y%m%d-%H%M%S')}"
        # warm-up: imports, the store's schema, the env caches — paid once per process
        _timed_train(max(256, episodes // 20), uri, experiment, f"{tmp}/warm")
        off, on, run_id, after = [], [], "", []
        for i in range(repeats):
            for mode in ("off", uri) if i % 2 == 0 else (uri, "off"):  # neither always first
                wall, cpu, tracked, tail = _timed_train(episodes, mode, experiment,
                                                        f"{tmp}/{i}{mode[:3]}")
                (off if mode == "off" else on).append((wall, cpu))
                if mode != "off":
                    run_id = tracked
                    after.append(tail)
    ratios = sorted(a[0] / b[0] for a, b in zip(on, off))
    overhead = statistics.median(ratios) - 1.0
    cpu_overhead = sum(a[1] for a in on) / sum(b[1] for b in off) - 1.0
    return {
        "tracking_uri": uri, "episodes": episodes, "workers": 2, "repeats": repeats,
        "wall_s_off": [w for w, _ in off], "wall_s_on": [w for w, _ in on],
        "cpu_s_off": [c for _, c in off], "cpu_s_on": [c for _, c in on],
        "overhead": overhead, "cpu_overhead": cpu_overhead,
        "wall_overhead_min": ratios[0] - 1.0, "wall_overhead_max": ratios[-1] - 1.0,
        "goal": GOAL, "meets_goal": overhead <= GOAL,
        "mlflow_import_s": _import_seconds(), "last_run_id": run_id,
        "after_training_s": after,
    }


def main(args) -> int:
    quick = bool(getattr(args, "quick", False))
    result = measure(EPISODES // 10 if quick else EPISODES, 1 if quick else REPEATS)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(f"MLflow tracking overhead ({result['episodes']:,} episodes, cem x2, "
              f"{result['repeats']} pairs, to {result['tracking_uri']})")
        print(f"  wall time, median of on/off   {result['overhead']:+7.1%}  (pairs "
              f"{result['wall_overhead_min']:+.1%} .. {result['wall_overhead_max']:+.1%}; "
              f"goal <= {GOAL:.0%}: {'met' if result['meets_goal'] else 'NOT met'})")
        print(f"  process CPU time, on vs off    {result['cpu_overhead']:+7.1%}")
        print(f"  after the training, the tracking thread's end of the run (summary, artifacts, "
              f"model): median {statistics.median(result['after_training_s']):.1f} s")
        print(f"  once per process: import mlflow {result['mlflow_import_s']:.1f} s")
    return 0
