"""The KPI store on SQLite and on real PostgreSQL: migrations, idempotent batches, queries."""
import datetime as dt
import random
import threading
import time

import pytest

from sinks.base import migrations
from sinks.factory import open_sink
from stgym import events as ev
from stgym import kpi
from streams import workload
import streamkit


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kpi.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sink(db_url):
    s = open_sink(db_url)
    s.setup()
    yield s
    s.close()


def batch_of(*groups):
    recs = []
    for group in groups:
        for e in group:
            recs.append((ev.TOPIC_OF[type(e)], 0, len(recs), None, ev.encode(e)))
    return kpi.parse_records(recs)


def test_migrations_are_versioned_and_idempotent(sink, db_url):
    known = [m.version for m in migrations()]
    assert known == sorted(known) and known[0] == 1
    assert sink.migration_versions() == known
    again = open_sink(db_url)
    again.setup()  # a second setup (another worker) applies nothing twice
    assert again.migration_versions() == known
    again.close()


def test_replayed_batches_never_double_count(sink):
    episodes = workload.make_episodes(600, "exp-replay", seed=4)
    first = sink.write_batch(batch_of(episodes[:400]))
    assert len(first.new_episodes) == 400 and first.duplicates == 0
    replay = sink.write_batch(batch_of(episodes[:400]))
    assert replay.new_episodes == [] and replay.duplicates == 400
    overlap = sink.write_batch(batch_of(episodes[350:]))
    assert len(overlap.new_episodes) == 200 and overlap.duplicates == 50
    streamkit.assert_matches_truth(sink.query_kpis(experiment="exp-replay"), streamkit.ground_truth(episodes))
    window_rows = sink.query_kpis(experiment="exp-replay", window_s=60)
    assert sum(r["episodes_total"] for r in window_rows) == 600
    snap = sink.metric_snapshot()
    assert sum(r["episodes_total"] for r in snap["kpis"]) == 600
    for key in streamkit.ground_truth(episodes):
        counts = snap["histograms"][(*key, "energy_per_switch_joules")]
        assert sum(counts.values()) == streamkit.ground_truth(episodes)[key]["successes"]


def test_queries_filter_by_key_since_and_window(sink):
    now = time.time()
    old_start = dt.datetime.fromtimestamp(now - 7200, dt.timezone.utc)
    new_start = dt.datetime.fromtimestamp(now - 120, dt.timezone.utc)
    old = workload.make_episodes(300, "exp-q", seed=5, start=old_start)
    new = workload.make_episodes(300, "exp-q", seed=6, start=new_start)
    sink.write_batch(batch_of(old, new))
    streamkit.assert_matches_truth(sink.query_kpis(experiment="exp-q"), streamkit.ground_truth(old + new))
    streamkit.assert_matches_truth(sink.query_kpis(experiment="exp-q", since_s=3600, now=now),
                                 streamkit.ground_truth(new))
    only = sink.query_kpis(experiment="exp-q", device_type="sot", algorithm="cem")
    assert [(r["device_type"], r["algorithm"]) for r in only] == [("sot", "cem")]
    assert sink.query_kpis(experiment="nope") == []
    windows = sink.query_kpis(experiment="exp-q", window_s=60, since_s=3600, now=now)
    assert windows and all(r["window_s"] == 60 and r["window_start"] % 60 == 0 for r in windows)
    assert sum(r["episodes_total"] for r in windows) == 300
    starts = [r["window_start"] for r in windows]
    assert starts == sorted(starts, reverse=True)


def test_training_progress_and_experiments(sink):
    now = ev.utc_now()
    base = dict(experiment_id="exp-t", run_id="exp-t-r0", worker_id="w0", device_type="sot",
                algorithm="cem")
    trainings = [ev.TrainingEvent(event_id=ev.new_event_id(), timestamp=now + dt.timedelta(seconds=i),
                                  iteration=i, objective=-1.0 / (i + 1), learning_rate=0.1 * 0.9**i,
                                  model_accuracy=min(1.0, i / 10), **base) for i in range(12)]
    random.Random(1).shuffle(trainings)
    started = ev.ExperimentEvent(event_id=ev.new_event_id(), timestamp=now, status="started",
                                 config={"episodes": 10}, **base)
    finished = ev.ExperimentEvent(event_id=ev.new_event_id(), timestamp=now + dt.timedelta(seconds=20),
                                  status="finished", **base)
    sink.write_batch(batch_of(trainings[:6], [finished]))
    sink.write_batch(batch_of(trainings[6:], trainings[:6], [started]))  # replay + late "started"
    row = sink.query_kpis(experiment="exp-t")[0]
    assert row["training_iterations"] == 12
    assert row["objective"] == pytest.approx(-1.0 / 12)
    assert row["learning_rate"] == pytest.approx(0.1 * 0.9**11)
    assert row["model_accuracy"] == 1.0
    assert row["episodes_total"] == 0 and row["success_rate"] is None
    assert sink.metric_snapshot()["experiments"] == {"finished": 1}
    runs = sink._fetch("SELECT status, config, started_at, ended_at FROM runs")
    assert len(runs) == 1 and runs[0][0] == "finished" and '"episodes": 10' in runs[0][1]
    assert runs[0][2] is not None and runs[0][3] is not None


def test_concurrent_writers_with_overlapping_batches_stay_exact(db_url):
    episodes = workload.make_episodes(3000, "exp-conc", seed=8)
    sinks = [open_sink(db_url) for _ in range(3)]
    for s in sinks:
        s.setup()
    errors = []

    def writer(s, seed):
        rng = random.Random(seed)
        try:
            for _ in range(15):
                start = rng.randrange(0, 2800)
                s.write_batch(batch_of(episodes[start:start + rng.randrange(50, 400)]))
            s.write_batch(batch_of(episodes))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(s, i)) for i, s in enumerate(sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    streamkit.assert_matches_truth(sinks[0].query_kpis(experiment="exp-conc"), streamkit.ground_truth(episodes))
    for s in sinks:
        s.close()


def test_names_with_copy_escapes_quotes_and_unicode_round_trip(sink):
    # The schema refuses control characters (tabs, newlines); what reaches the store may still
    # hold COPY's escapes and null marker as text, quotes and non-ASCII letters.
    odd = "exp\\t\\N\\n'q\"\u00e9\\"
    episodes = [e.__class__(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "worker_id": odd,
                               "run_id": odd + "-r"})
                for e in workload.make_episodes(200, odd, seed=9)]
    result = sink.write_batch(batch_of(episodes))  # 200 rows: the COPY path on PostgreSQL
    assert len(result.new_episodes) == 200
    streamkit.assert_matches_truth(sink.query_kpis(experiment=odd), streamkit.ground_truth(episodes))
    stored = sink._fetch(f"SELECT DISTINCT worker_id, run_id FROM episodes WHERE experiment_id = {sink.ph}",
                         [odd])
    assert stored == [(odd, odd + "-r")]
