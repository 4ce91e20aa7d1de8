"""Measure a pulse policy: write error rate, energy per switch, switching time (batched)."""
from __future__ import annotations

import math
import time

import numpy as np

from producers.envs.array import ArrayTask
from producers.rollout import EpisodeBatch, PulsePolicy, episode_task, rollout
from stgym.errors import UserError

CHUNK = 2000


def seed_chunks(episodes: int, seed: int):
    """The evaluation episodes' reset seeds from `seed`, in chunks of at most CHUNK: episode i
    is `env.reset(seed=...)` of its seed, so every policy kind is scored on the same episodes."""
    rng = np.random.default_rng(seed)
    for start in range(0, episodes, CHUNK):
        yield rng.integers(0, 2**63, size=min(CHUNK, episodes - start), dtype=np.int64)


def concatenate(batches: list[EpisodeBatch]) -> EpisodeBatch:
    """One batch of `batches`, in order (a field that none of them has stays None)."""
    return EpisodeBatch(**{
        name: None if all(getattr(b, name) is None for b in batches)
        else np.concatenate([getattr(b, name) for b in batches])
        for name in EpisodeBatch.__dataclass_fields__
    })


def take(batch: EpisodeBatch, rows) -> EpisodeBatch:
    """The episodes `rows` (a slice or an index array) of `batch`, in that order."""
    return EpisodeBatch(**{
        name: None if (value := getattr(batch, name)) is None else value[rows]
        for name in EpisodeBatch.__dataclass_fields__
    })


def run_episodes(task, pulse: np.ndarray, episodes: int, seed: int,
                 stop_alignment: float | None = None) -> EpisodeBatch:
    """`episodes` episodes of one pulse, in chunks (bounded memory), seeds from `seed`."""
    batches = []
    for seeds in seed_chunks(episodes, seed):
        n = len(seeds)
        stops = None if stop_alignment is None else np.full(n, stop_alignment)
        batches.append(rollout(task, np.tile(pulse, (n, 1)), seeds, stops))
    return concatenate(batches)


def evaluate_policy(policy: PulsePolicy, episodes: int, temperature: float | None = None,
                    seed: int = 12345) -> dict:
    """Statistics of `episodes` evaluation episodes (JSON-ready; None where undefined)."""
    kwargs = dict(policy.env_kwargs)
    if temperature is not None:
        kwargs["temperature"] = temperature
    try:
        task = episode_task(policy.env_id, kwargs)
    except (ValueError, TypeError) as error:
        raise UserError(f"policy {policy.env_id} {kwargs}: {error}") from None
    started = time.perf_counter()
    batch = run_episodes(task, policy.amplitudes, episodes, seed, policy.stop_alignment)
    wall = time.perf_counter() - started
    return describe(batch, task, wall) | {"algorithm": policy.algorithm, "env_id": policy.env_id}


def describe(batch: EpisodeBatch, task, wall_s: float) -> dict:
    """Statistics of `batch`; on the array env an episode writes a whole pattern (a failure is
    any device off its target bit), its energy is all devices', and `energy_per_bit_j` is that
    energy per bit that had to flip."""
    failures = int((~batch.success).sum())
    switched = batch.switching_time_s[batch.success & np.isfinite(batch.switching_time_s)]
    array = {}
    if isinstance(task, ArrayTask):
        array = {
            "devices": task.num_devices,
            "dipolar_coupling": task.dipolar_coupling,
            "bits_per_episode": float(batch.bits.mean()),
            "energy_per_bit_j": _finite(batch.energy_per_bit_j),
        }
    return {
        "episodes": len(batch),
        "temperature_k": task.temperature,
        "success_rate": batch.success_rate,
        "write_error_rate": failures / len(batch),
        "write_error_rate_95_upper": wer_upper_bound(failures, len(batch)),
        "energy_per_switch_j": _finite(batch.energy_per_switch_j),
        "mean_switching_time_s": _finite(float(switched.mean())) if len(switched) else None,
        "mean_episode_steps": float(batch.steps.mean()),
        "sim_steps_per_s": float(batch.sim_steps.sum() / wall_s) if wall_s > 0 else None,
        "wall_time_s": wall_s,
        **array,
    }


def wer_upper_bound(failures: int, episodes: int, z: float = 1.6449) -> float:
    """One-sided 95 % upper confidence bound of a failure probability: exact for no failure
    (1 − 0.05^(1/n)), the Wilson score bound otherwise."""
    if failures == 0:
        return 1.0 - 0.05 ** (1.0 / episodes)
    p = failures / episodes
    centre = p + z * z / (2 * episodes)
    spread = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes**2))
    return min(1.0, (centre + spread) / (1 + z * z / episodes))


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None
