"""Convergence per training run: stgym.kpi.fold_convergence, stored by the sinks in the
training events' transaction, counted in episodes at query time, exported as gauges."""
from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sinks.factory import open_sink
from stgym import events as ev
from stgym import kpi
from streams.metrics import KpiCollector

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
BASE = dict(experiment_id="exp-conv", worker_id="w0", device_type="stt-pma", algorithm="cem")


def training(run: str, iteration: int, accuracy: float) -> ev.TrainingEvent:
    return ev.TrainingEvent(event_id=ev.new_event_id(), timestamp=T0 + dt.timedelta(seconds=iteration),
                            run_id=run, iteration=iteration, objective=-1.0, learning_rate=0.1,
                            model_accuracy=accuracy, **BASE)


def episode(run: str, second: float) -> ev.EpisodeEvent:
    return ev.EpisodeEvent(event_id=ev.new_event_id(), timestamp=T0 + dt.timedelta(seconds=second),
                           run_id=run, episode=0, seed=1, success=True, energy_j=1e-13,
                           switching_time_s=1e-9, steps=10, total_reward=1.0, sim_steps=100,
                           wall_time_s=0.01, sim_steps_per_s=1e4, **BASE)


ACCURACIES = [0.5, 0.96, 0.97, 0.9, 0.95, 0.99, 0.98, 0.5, 0.99]  # converges at iteration 4


def test_fold_finds_the_first_long_enough_streak_whatever_the_order():
    events = [training("r", i, a) for i, a in enumerate(ACCURACIES)]
    state = kpi.fold_convergence(kpi.Convergence(), events)
    assert (state.converged_iteration, state.converged_ts) == (4, events[4].timestamp.timestamp())
    assert state.last_iteration == 8
    # stragglers older than the last counted iteration are ignored: 5, 6 first, then 0..4
    # change nothing, 7 breaks the streak
    late = kpi.Convergence()
    for chunk in (events[5:7], events[:5], events[7:]):
        late = kpi.fold_convergence(late, chunk)
    assert not late.converged and late.streak == 1 and late.last_iteration == 8
    # in pieces and replayed, in order: the same state as at once
    in_order = kpi.Convergence()
    for chunk in (events[:3], events[3:6], events[6:], events[:9]):
        in_order = kpi.fold_convergence(in_order, chunk)
    assert in_order == state
    never = kpi.fold_convergence(kpi.Convergence(), [training("r", i, 0.94) for i in range(20)])
    assert not never.converged and never.streak == 0


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'conv.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def test_sink_stores_convergence_and_counts_episodes_to_it(store_url):
    sink = open_sink(store_url)
    sink.setup()
    try:
        events = [training("r1", i, a) for i, a in enumerate(ACCURACIES)]
        episodes = [episode("r1", s) for s in (0.5, 1.5, 2.5, 3.5, 4.0, 6.5)]  # 5 up to iteration 4
        # the training events arrive in two batches, the later episodes after the convergence
        sink.write_batch(kpi.ParsedBatch(episodes=episodes[:2], trainings=events[:5]))
        sink.write_batch(kpi.ParsedBatch(trainings=[*events[3:], *events[:2]]))  # replays too
        sink.write_batch(kpi.ParsedBatch(episodes=episodes[2:],
                                         trainings=[training("r2", i, 0.5) for i in range(3)]))
        assert sink.convergence_by_key() == {("exp-conv", "stt-pma", "cem"): (2, 1, 5.0)}
        row, = sink.query_kpis(experiment="exp-conv")
        assert (row["training_runs"], row["runs_converged"], row["episodes_to_convergence_mean"]) == (2, 1, 5.0)
        registry = CollectorRegistry()
        registry.register(KpiCollector(sink))
        text = generate_latest(registry).decode()
        labels = 'algorithm="cem",device_type="stt-pma",experiment="exp-conv"'
        assert f"training_episodes_to_convergence{{{labels}}} 5.0" in text
        assert f"training_runs_converged{{{labels}}} 1.0" in text
        assert f"training_runs{{{labels}}} 2.0" in text
    finally:
        sink.close()
