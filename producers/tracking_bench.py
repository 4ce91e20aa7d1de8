"""`stgym bench tracking`: what MLflow tracking costs a training, measured in the same run.

The same training (cem, 2 workers, in-process memory bus, same seed) runs with tracking off
and on, interleaved, `REPEATS` times each; the fastest of each counts. A tracked run's wall time
includes everything tracking adds to `train()`: the worker-side metrics, the background
thread's log_batch calls, and `finish` (summary, artifacts, the pyfunc model, waiting for the
thread). Tracking goes to the tracking server (settings.mlflow_url) when it answers, else to a
local SQLite store in a temporary directory. Goal: overhead <= 3 % of the training's wall time.
The one-time cost of a `stgym train` process (importing MLflow) is reported apart.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

EPISODES = 60_000
REPEATS = 3
GOAL = 0.03


def _server_answers(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/health", timeout=2).text.strip() == "OK"
    except requests.RequestException:
        return False


def _timed_train(episodes: int, mlflow: str, experiment: str, run_dir: str) -> tuple[float, str]:
    from producers.runner import train
    from producers.train_config import TrainConfig
    from stgym.bus import MemoryBus

    config = TrainConfig(algorithm="cem", episodes=episodes, workers=2, experiment=experiment,
                         seed=11, run_dir=run_dir, mlflow=mlflow)
    started = time.perf_counter()
    summary = train(config, bus=MemoryBus(f"{experiment}-{mlflow[:4]}-{time.monotonic_ns()}"))
    wall = time.perf_counter() - started
    if not summary.ok:
        raise RuntimeError(f"bench training failed: {summary.failed_workers}")
    return wall, summary.mlflow_run_id or ""


def _import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import mlflow.pyfunc; print(time.perf_counter() - t)"
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
        off, on, run_id = [], [], ""
        for i in range(repeats):
            off.append(_timed_train(episodes, "off", experiment, f"{tmp}/off{i}")[0])
            wall, run_id = _timed_train(episodes, uri, experiment, f"{tmp}/on{i}")
            on.append(wall)
    best_off, best_on = min(off), min(on)
    overhead = best_on / best_off - 1.0
    return {
        "tracking_uri": uri, "episodes": episodes, "workers": 2, "repeats": repeats,
        "wall_s_off": off, "wall_s_on": on, "best_off_s": best_off, "best_on_s": best_on,
        "overhead": overhead, "goal": GOAL, "meets_goal": overhead <= GOAL,
        "mlflow_import_s": _import_seconds(), "last_run_id": run_id,
    }


def main(args) -> int:
    quick = bool(getattr(args, "quick", False))
    result = measure(EPISODES // 10 if quick else EPISODES, 1 if quick else REPEATS)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(f"MLflow tracking overhead ({result['episodes']:,} episodes, cem x2, best of "
              f"{result['repeats']}, to {result['tracking_uri']})")
        print(f"  tracking off   {result['best_off_s']:8.2f} s")
        print(f"  tracking on    {result['best_on_s']:8.2f} s")
        print(f"  overhead       {result['overhead']:+8.1%}  (goal <= {GOAL:.0%}: "
              f"{'met' if result['meets_goal'] else 'NOT met'})")
        print(f"  once per process: import mlflow {result['mlflow_import_s']:.1f} s")
    return 0
