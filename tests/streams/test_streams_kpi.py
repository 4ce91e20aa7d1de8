"""The KPI aggregation functions, exactly, without a broker or a database."""
import datetime as dt
import math

import numpy as np
import pytest

from stgym import events as ev
from stgym import kpi
from streams import workload
import streamkit


def records(events, topic=ev.TOPIC_EPISODES):
    return [(topic, 0, i, None, ev.encode(e)) for i, e in enumerate(events)]


def test_parse_keeps_valid_events_and_deduplicates_event_ids():
    episodes = workload.make_episodes(50, "exp-a", seed=1)
    batch = kpi.parse_records(records(episodes + episodes[:10]))
    assert [e.event_id for e in batch.episodes] == [e.event_id for e in episodes]
    assert batch.rejected == [] and batch.duplicates == 10
    assert batch.processed_by_topic == {ev.TOPIC_EPISODES: 60}


def test_parse_rejects_every_malformed_kind_with_its_reason_and_original_bytes():
    bad = streamkit.malformed_records(60, seed=3)
    recs = [(ev.TOPIC_EPISODES, 1, i, b"k", raw) for i, (raw, _) in enumerate(bad)]
    recs.append((ev.TOPIC_EPISODES, 1, 60, b"k", None))
    recs.append(("some.other.topic", 0, 0, None, b"{}"))
    batch = kpi.parse_records(recs)
    assert len(batch) == 0
    reasons = [r.reason for r in batch.rejected]
    assert reasons == [reason for _, reason in bad] + ["empty", "unknown_topic"]
    assert {"bad_json", "invalid_field", "schema_version", "oversized"} <= set(reasons)
    assert [r.value for r in batch.rejected[:60]] == [raw for raw, _ in bad]
    assert [r.offset for r in batch.rejected[:60]] == list(range(60))


def test_parse_routes_training_and_experiment_events():
    t = ev.TrainingEvent(event_id=ev.new_event_id(), timestamp=ev.utc_now(), experiment_id="x",
                         run_id="r", worker_id="w", device_type="sot", algorithm="cem",
                         iteration=1, objective=0.5, learning_rate=0.1, model_accuracy=0.25)
    x = ev.ExperimentEvent(event_id=ev.new_event_id(), timestamp=ev.utc_now(), experiment_id="x",
                           run_id="r", worker_id="w", device_type="sot", algorithm="cem",
                           status="started")
    batch = kpi.parse_records(records([t], ev.TOPIC_TRAINING) + records([x], ev.TOPIC_EXPERIMENTS)
                              + records([t], ev.TOPIC_EPISODES))
    assert batch.trainings == [t] and batch.experiments == [x]
    assert [r.reason for r in batch.rejected] == ["invalid_field"]


def test_aggregate_counts_means_and_buckets_exactly():
    episodes = workload.make_episodes(2000, "exp-b", seed=2)
    cumulative = kpi.aggregate(episodes)
    truth = streamkit.ground_truth(episodes)
    assert set(cumulative) == set(truth)
    for key, delta in cumulative.items():
        group = [e for e in episodes if kpi.key_of(e) == key]
        ok = [e for e in group if e.success]
        times = [e.switching_time_s for e in ok if e.switching_time_s is not None]
        assert delta.episodes_total == truth[key]["episodes_total"] == len(group)
        assert delta.successes == truth[key]["successes"]
        assert delta.sim_steps == sum(e.sim_steps for e in group)
        assert math.isclose(delta.energy_success_sum, math.fsum(e.energy_j for e in ok), rel_tol=1e-12)
        assert delta.switch_time_count == len(times)
        assert sum(delta.energy_buckets.values()) == len(ok)
        assert sum(delta.time_buckets.values()) == len(times)
        row = kpi.summarize(vars(delta), kpi.percentiles_of(times))
        for name, value in truth[key].items():
            if isinstance(value, int):
                assert row[name] == value
            else:
                assert math.isclose(row[name], value, rel_tol=1e-9), name


def test_percentiles_match_numpy_linear_interpolation():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = rng.lognormal(-20, 0.5, n).tolist()
        got = kpi.percentiles_of(values)
        want = np.percentile(values, [50, 95, 99], method="linear")
        assert got == pytest.approx(want, rel=1e-12)
    assert kpi.percentiles_of([]) == (None, None, None)


def test_bucket_index():
    bounds = (1.0, 2.0, 3.0)
    assert [kpi.bucket_index(v, bounds) for v in (0.5, 1.0, 1.5, 3.0, 3.1)] == [0, 0, 1, 2, 3]


def test_latest_training_picks_newest_per_key():
    now = ev.utc_now()
    def t(i, exp, delta):
        return ev.TrainingEvent(event_id=ev.new_event_id(), timestamp=now + dt.timedelta(seconds=delta),
                                experiment_id=exp, run_id="r", worker_id="w", device_type="sot",
                                algorithm="cem", iteration=i, objective=float(i), learning_rate=0.1,
                                model_accuracy=0.5)
    latest = kpi.latest_training([t(3, "a", 3), t(5, "a", 1), t(1, "b", 0)])
    assert latest[("a", "sot", "cem")].iteration == 3
    assert latest[("b", "sot", "cem")].iteration == 1
