"""KPI aggregation as plain functions: validate raw records, fold episodes into deltas.

Nothing here knows about Faust, Kafka or a database, so both the stream layer and the sinks
build on it (it sits in stgym, beneath both). The stream agents, the embedded demo
pipeline and the sinks all call these functions, and the unit tests check them exactly.

Definitions (per key = (experiment_id, device_type, algorithm)):
  success_rate            successes / episodes_total
  energy_per_switch_j     mean energy_j over successful episodes
  switching_time_s pXX    exact percentile (linear interpolation, as SQL percentile_cont) of
                          switching_time_s over successful episodes that report one
  sim_steps_per_s         sum(sim_steps) / sum(wall_time_s) (aggregate simulator throughput)
  write_error_rate        (episodes_total - successes) / episodes_total, with the exact
                          (Clopper-Pearson) two-sided 95 % interval of the binomial proportion:
                          write_error_rate_lower95 / _upper95 (so the upper bound is a one-sided
                          97.5 % bound: the true rate is above it with probability <= 2.5 %)
  convergence (per run)   the run converges at the first training iteration that starts
                          CONVERGENCE_ITERATIONS consecutive iterations whose model_accuracy
                          (the success rate the trainer reports for the iteration's episodes)
                          is >= CONVERGENCE_TARGET;
                          episodes_to_convergence = the run's episodes up to that iteration's
                          event; per key, the mean over its converged runs
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence

from scipy.special import betaincinv

from stgym import events as ev

# Prometheus histogram upper bounds (the +Inf bucket is implicit).
ENERGY_BUCKETS_J: tuple[float, ...] = tuple(
    m * 10.0**e for e in range(-17, -8) for m in (1.0, 3.0)
)
SWITCH_TIME_BUCKETS_S: tuple[float, ...] = tuple(
    m * 10.0**e for e in range(-12, -5) for m in (1.0, 3.0)
)

Key = tuple[str, str, str]


# Every reason a record can reach the DLQ with: the schema's, two of the transport's, and
# `unstorable` (valid by the schema, refused by the database for a data reason).
REJECT_REASONS: tuple[str, ...] = (*ev.REASONS, "empty", "unknown_topic", "unstorable")


@dataclasses.dataclass
class Rejected:
    """A record refused by validation: where it came from, why, and its original bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    detail: str


@dataclasses.dataclass
class ParsedBatch:
    episodes: list[ev.EpisodeEvent] = dataclasses.field(default_factory=list)
    trainings: list[ev.TrainingEvent] = dataclasses.field(default_factory=list)
    experiments: list[ev.ExperimentEvent] = dataclasses.field(default_factory=list)
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    processed_by_topic: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicates: int = 0  # repeated event ids inside this batch (kept once)
    # event_id -> (topic, partition, offset, key, value) of the record it came from, so an
    # event the store refuses can still reach the DLQ as the producer wrote it
    origins: dict[str, tuple] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.episodes) + len(self.trainings) + len(self.experiments)

    def halves(self) -> tuple["ParsedBatch", "ParsedBatch"]:
        """The events split into two batches of (nearly) equal size, in order; the halves
        carry the origins but none of the parse bookkeeping (rejected, counts)."""
        events = [*self.episodes, *self.trainings, *self.experiments]
        middle = len(events) // 2
        return _batch_of(events[:middle], self.origins), _batch_of(events[middle:], self.origins)

    def rejected_event(self, event, reason: str, detail: str) -> Rejected:
        """A Rejected for an event of this batch, with its original record's bytes."""
        topic, partition, offset, key, value = self.origins[event.event_id]
        return Rejected(topic, partition, offset, key, value, reason, detail[:500])


def _batch_of(events: list, origins: dict[str, tuple]) -> ParsedBatch:
    batch = ParsedBatch(origins=origins)
    for event in events:
        _route(batch, event)
    return batch


def _route(batch: ParsedBatch, event) -> None:
    if isinstance(event, ev.EpisodeEvent):
        batch.episodes.append(event)
    elif isinstance(event, ev.TrainingEvent):
        batch.trainings.append(event)
    else:
        batch.experiments.append(event)


def parse_records(records: Iterable[tuple[str, int, int, bytes | None, bytes | None]]) -> ParsedBatch:
    """Validate (topic, partition, offset, key, value) records into events; never raises.

    Bad records land in `rejected` with a bounded reason label: one of the event schema's
    REASONS, empty or unknown_topic (REJECT_REASONS lists them all).
    Duplicate event ids inside one batch are kept once.
    """
    batch = ParsedBatch()
    origins = batch.origins
    for topic, partition, offset, key, value in records:
        batch.processed_by_topic[topic] = batch.processed_by_topic.get(topic, 0) + 1
        raw = value if isinstance(value, bytes) else (b"" if value is None else bytes(value))
        try:
            if not raw:
                raise ev.InvalidEvent("empty", "record without a value")
            if topic not in ev.TYPE_OF_TOPIC:
                raise ev.InvalidEvent("unknown_topic", topic)
            event = ev.decode_for_topic(raw, topic)
        except ev.InvalidEvent as error:
            batch.rejected.append(
                Rejected(topic, partition, offset, key, raw, error.reason, error.detail[:500])
            )
            continue
        if event.event_id in origins:
            batch.duplicates += 1
            continue
        origins[event.event_id] = (topic, partition, offset, key, raw)
        _route(batch, event)
    return batch


def key_of(event) -> Key:
    return (event.experiment_id, event.device_type, event.algorithm)


def bucket_index(value: float, bounds: Sequence[float]) -> int:
    """Index of the first bound >= value (len(bounds) for the +Inf bucket)."""
    return bisect.bisect_left(bounds, value)


@dataclasses.dataclass
class KpiDelta:
    """Additive counters for one key."""

    episodes_total: int = 0
    successes: int = 0
    energy_success_sum: float = 0.0
    switch_time_sum: float = 0.0
    switch_time_count: int = 0
    sim_steps: int = 0
    wall_time_s: float = 0.0
    reward_sum: float = 0.0
    last_event_ts: float = 0.0
    energy_buckets: dict[int, int] = dataclasses.field(default_factory=dict)
    time_buckets: dict[int, int] = dataclasses.field(default_factory=dict)

    def add(self, episode: ev.EpisodeEvent) -> None:
        """Count one episode."""
        self.episodes_total += 1
        self.sim_steps += episode.sim_steps
        self.wall_time_s += episode.wall_time_s
        self.reward_sum += episode.total_reward
        ts = episode.timestamp.timestamp()
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        if episode.success:
            self.successes += 1
            self.energy_success_sum += episode.energy_j
            b = bisect.bisect_left(ENERGY_BUCKETS_J, episode.energy_j)
            self.energy_buckets[b] = self.energy_buckets.get(b, 0) + 1
            if episode.switching_time_s is not None:
                self.switch_time_sum += episode.switching_time_s
                self.switch_time_count += 1
                b = bisect.bisect_left(SWITCH_TIME_BUCKETS_S, episode.switching_time_s)
                self.time_buckets[b] = self.time_buckets.get(b, 0) + 1


def aggregate(episodes: Iterable[ev.EpisodeEvent]) -> dict[Key, KpiDelta]:
    """The deltas per key of a batch of (new) episodes."""
    deltas: dict[Key, KpiDelta] = {}
    for episode in episodes:
        key = key_of(episode)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = KpiDelta()
        delta.add(episode)
    return deltas


def latest_training(trainings: Iterable[ev.TrainingEvent]) -> dict[Key, ev.TrainingEvent]:
    """The newest training event per key (by timestamp, then iteration)."""
    latest: dict[Key, ev.TrainingEvent] = {}
    for event in trainings:
        key = key_of(event)
        old = latest.get(key)
        if old is None or (event.timestamp, event.iteration) >= (old.timestamp, old.iteration):
            latest[key] = event
    return latest


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Exact percentile with linear interpolation (same as SQL percentile_cont)."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def percentiles_of(times: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(p50, p95, p99) of the values, exact."""
    ordered = sorted(times)
    return percentile(ordered, 0.50), percentile(ordered, 0.95), percentile(ordered, 0.99)


WER_CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = WER_CONFIDENCE) -> tuple[float, float] | None:
    """The exact two-sided `confidence` interval (lower, upper) of a binomial proportion from k
    events in n trials: Beta quantiles, lower = 0 when k = 0 and upper = 1 when k = n; None
    without trials."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, tail))
    upper = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1.0 - tail))
    return lower, upper


CONVERGENCE_TARGET = 0.95
CONVERGENCE_ITERATIONS = 3


@dataclasses.dataclass
class Convergence:
    """One run's way to convergence: its current streak of iterations at or above the target
    (from streak_start_iteration, whose event time is streak_start_ts) and, once the streak is
    long enough, the iteration and time it converged at (kept from then on)."""

    streak: int = 0
    streak_start_iteration: int | None = None
    streak_start_ts: float | None = None
    last_iteration: int = -1
    converged_iteration: int | None = None
    converged_ts: float | None = None

    @property
    def converged(self) -> bool:
        return self.converged_iteration is not None


def fold_convergence(state: Convergence, trainings: Iterable[ev.TrainingEvent],
                     target: float = CONVERGENCE_TARGET,
                     iterations: int = CONVERGENCE_ITERATIONS) -> Convergence:
    """The state after a run's training events (in any order; iterations at or below the last
    one counted are ignored, so replays and stragglers change nothing)."""
    state = dataclasses.replace(state)
    for event in sorted(trainings, key=lambda t: t.iteration):
        if event.iteration <= state.last_iteration:
            continue
        state.last_iteration = event.iteration
        if state.converged:
            continue
        if event.model_accuracy >= target:
            if state.streak == 0:
                state.streak_start_iteration = event.iteration
                state.streak_start_ts = event.timestamp.timestamp()
            state.streak += 1
            if state.streak >= iterations:
                state.converged_iteration = state.streak_start_iteration
                state.converged_ts = state.streak_start_ts
        else:
            state.streak, state.streak_start_iteration, state.streak_start_ts = 0, None, None
    return state


def summarize(counters: dict, pcts: Sequence[float | None] | None = None) -> dict:
    """A KPI row (the `stgym kpi --json` shape) from summed counters and (p50, p95, p99)."""
    episodes = int(counters.get("episodes_total") or 0)
    successes = int(counters.get("successes") or 0)
    wall = float(counters.get("wall_time_s") or 0.0)
    row = {
        "episodes_total": episodes,
        "successes": successes,
        "success_rate": successes / episodes if episodes else None,
        "energy_per_switch_j_mean": (
            float(counters.get("energy_success_sum") or 0.0) / successes if successes else None
        ),
        "switching_time_s_mean": (
            float(counters["switch_time_sum"]) / int(counters["switch_time_count"])
            if counters.get("switch_time_count") else None
        ),
        "sim_steps_per_s": float(counters.get("sim_steps") or 0) / wall if wall > 0 else None,
        "mean_reward": float(counters.get("reward_sum") or 0.0) / episodes if episodes else None,
        "write_errors": episodes - successes,
        "write_error_rate": (episodes - successes) / episodes if episodes else None,
    }
    bounds = clopper_pearson(episodes - successes, episodes)
    row["write_error_rate_lower95"], row["write_error_rate_upper95"] = bounds or (None, None)
    if pcts is not None:
        row["switching_time_s_p50"], row["switching_time_s_p95"], row["switching_time_s_p99"] = pcts
    return row

