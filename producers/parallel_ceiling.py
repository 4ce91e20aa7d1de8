"""The plain-processes reference of `stgym bench ray`: what two busy processes get on this
machine right now, measured next to the Ray rows.

The rollouts of CEM's K = 1 run — a generation is 1,024 episodes of SpinTorque-v1 (here one
fixed pulse, 0.6 of j_max over the 80 control intervals, feedback stop 0.9, seeds from a seeded
generator) — are run for G generations once by 1 process and once by 2 processes at once, each
its round-robin half of every generation (rows k::2). No Ray and no learner: each child is a
plain `python -m producers.parallel_ceiling` on one OpenMP thread, timed from a common start
signal sent once every child has imported and prepared its work. The ratio (1 process's wall
time over 2 processes') would be 2.0 if the cores added up; on a small or shared machine it is
less (the machine's other work, shared caches and memory bandwidth, the scheduler).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

MODULE = "producers.parallel_ceiling"
ENV_ID = "SpinTorque-v1"
AMPLITUDE = 0.6  # of j_max, in every control interval
STOP_ALIGNMENT = 0.9


def measure(generations: int, episodes: int = 1024, pairs: int = 3, seed: int = 1) -> dict:
    """`pairs` interleaved timings, 1 process then 2 processes, of the same rollouts; the
    median, min and max ratio, each pair's times and each 2-process child's own wall and CPU
    seconds, the 1-minute load average before and after."""
    load_before = os.getloadavg()[0]
    rows = []
    for _ in range(pairs):
        one, _ = _time(1, generations, episodes, seed)
        two, children = _time(2, generations, episodes, seed)
        rows.append({"one_process_s": one, "two_processes_s": two, "ratio": one / two,
                     "children": children})
    ratios = [row["ratio"] for row in rows]
    return {"generations": generations, "episodes": episodes, "pairs": rows,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "load_1min": (load_before, os.getloadavg()[0])}


def _time(processes: int, generations: int, episodes: int, seed: int) -> tuple[float, list]:
    """Wall seconds from the common start to the last child's end, and the children's times."""
    args = [str(processes), str(generations), str(episodes), str(seed)]
    children = [subprocess.Popen([sys.executable, "-m", MODULE, str(share), *args],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
                for share in range(processes)]
    try:
        for child in children:
            _line(child)  # "ready": imported, task and seeds prepared
        started = time.perf_counter()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        times = [json.loads(_line(child)) for child in children]
        return time.perf_counter() - started, times
    finally:
        for child in children:
            child.kill()
            child.communicate()


def _line(child: subprocess.Popen) -> str:
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"a plain-processes child exited ({child.wait()}): "
                           f"{child.stderr.read()[-2000:]}")
    return line


def _child(share: int, processes: int, generations: int, episodes: int, seed: int) -> None:
    import gymnasium as gym
    import numpy as np

    import producers  # noqa: F401  (registers the envs)
    from producers.rollout import rollout
    from producers.trainers import TrainerOptions

    task = gym.make(ENV_ID).unwrapped.task
    rng = np.random.default_rng(seed)
    seeds = [rng.integers(0, 2**63, size=episodes, dtype=np.int64)[share::processes]
             for _ in range(generations)]
    pulses = np.full((episodes, TrainerOptions().segments), AMPLITUDE)[share::processes]
    stops = np.full(episodes, STOP_ALIGNMENT)[share::processes]
    print("ready", flush=True)
    sys.stdin.readline()
    wall, cpu = time.perf_counter(), time.process_time()
    for generation in seeds:
        rollout(task, pulses, generation, stops)
    print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}),
          flush=True)


if __name__ == "__main__":
    _child(*map(int, sys.argv[1:]))
