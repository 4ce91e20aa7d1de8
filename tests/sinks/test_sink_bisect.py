"""What the store refuses for a data reason is isolated by bisecting the batch: the refused
events come back as `unstorable` with the database's message, all the others commit, and
KPIs count exactly the stored ones. On SQLite and on real PostgreSQL (a private database)."""
import msgspec
import pytest

from sinks.factory import open_sink
from stgym import events as ev
from stgym import kpi
from streams import workload
import streamkit

POISON = "poison"  # run ids starting with this are refused by the trigger the tests install

SQLITE_TRIGGER = (
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON episodes WHEN NEW.run_id LIKE 'poison%'"
    " BEGIN SELECT RAISE(ABORT, 'poisoned run id refused by trigger'); END")
POSTGRES_TRIGGER = [
    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF NEW.run_id LIKE 'poison%' THEN"
    " RAISE EXCEPTION 'poisoned run id % refused by trigger', NEW.run_id; END IF;"
    " RETURN NEW; END $$",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON episodes FOR EACH ROW"
    " EXECUTE FUNCTION refuse_poison()",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def sink(request, tmp_path):
    if request.param == "sqlite":
        s = open_sink(f"sqlite:///{tmp_path / 'kpi.sqlite3'}")
        s.setup()
        s.conn.execute(SQLITE_TRIGGER)
    else:
        s = open_sink(request.getfixturevalue("postgres_url"))
        s.setup()
        with s.conn.cursor() as cur:
            for statement in POSTGRES_TRIGGER:
                cur.execute(statement)
        s.conn.commit()
    yield s
    s.close()


def batch_of(events):
    return kpi.parse_records(
        [(ev.TOPIC_OF[type(e)], 0, i, b"k%d" % i, ev.encode(e)) for i, e in enumerate(events)])


def unchecked_batch(events):
    """The events as a parsed batch without decoding them (so schema checks are skipped)."""
    batch = kpi.ParsedBatch()
    for i, e in enumerate(events):
        batch.origins[e.event_id] = (ev.TOPIC_OF[type(e)], 0, i, None, b"")
        {ev.EpisodeEvent: batch.episodes, ev.TrainingEvent: batch.trainings,
         ev.ExperimentEvent: batch.experiments}[type(e)].append(e)
    return batch


def poisoned(event, **fields):
    """The event with fields the schema would refuse, set behind its back (a test-only
    route to values the store itself must refuse)."""
    event = msgspec.structs.replace(event)
    for name, value in fields.items():
        msgspec.structs.force_setattr(event, name, value)
    return event


def stored_ids(sink, experiment):
    return {r[0] for r in sink._fetch(
        f"SELECT event_id FROM episodes WHERE experiment_id = {sink.ph}", [experiment])}


@pytest.mark.parametrize("bad_at", [[0], [1999], [7, 8, 9], [3, 500, 1000, 1500, 1999]])
def test_refused_events_are_isolated_and_the_rest_commits(sink, bad_at):
    experiment = f"exp-bisect-{len(bad_at)}-{bad_at[0]}"
    episodes = workload.make_episodes(2000, experiment, seed=5)
    for i in bad_at:
        episodes[i] = poisoned(episodes[i], run_id=f"{POISON}-{i}")
    batch = batch_of(episodes)
    result = sink.write_batch(batch)

    bad_ids = {episodes[i].event_id for i in bad_at}
    assert {e.event_id for e, _ in result.unstorable} == bad_ids
    assert all("refused by trigger" in message for _, message in result.unstorable)
    good = [e for e in episodes if e.event_id not in bad_ids]
    assert len(result.new_episodes) == len(good)
    assert stored_ids(sink, experiment) == {e.event_id for e in good}
    streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment), streamkit.ground_truth(good))
    # bisection costs O(k log n) transactions, not one per event
    assert result.transactions <= 1 + 2 * len(bad_at) * 12

    # each refused event reaches the DLQ as the producer wrote it
    rejected = [batch.rejected_event(e, "unstorable", m) for e, m in result.unstorable]
    assert {r.value for r in rejected} == {ev.encode(episodes[i]) for i in bad_at}
    assert {r.offset for r in rejected} == set(bad_at)

    # a replay stores nothing twice and refuses the same events again
    again = sink.write_batch(batch_of(episodes))
    assert again.new_episodes == [] and again.duplicates == len(good)
    assert {e.event_id for e, _ in again.unstorable} == bad_ids
    streamkit.assert_matches_truth(sink.query_kpis(experiment=experiment), streamkit.ground_truth(good))


def test_a_clean_batch_is_one_transaction(sink):
    episodes = workload.make_episodes(500, "exp-bisect-clean", seed=6)
    result = sink.write_batch(batch_of(episodes))
    assert result.transactions == 1 and result.unstorable == []
    assert len(result.new_episodes) == 500


@pytest.mark.parametrize("fields", [
    {"episode": 2**64},             # beyond BIGINT
    {"seed": -(2**70)},
    {"experiment_id": "nul\x00inside"},  # PostgreSQL text cannot hold NUL
    {"device_type": "lone \ud800 surrogate"},  # not encodable as UTF-8
], ids=["episode-2**64", "seed-neg-2**70", "nul", "surrogate"])
def test_values_the_schema_would_refuse_are_unstorable_not_fatal(sink, fields):
    episodes = workload.make_episodes(300, f"exp-raw-{next(iter(fields))}", seed=7)
    episodes[150] = poisoned(episodes[150], **fields)
    result = sink.write_batch(unchecked_batch(episodes))
    if result.unstorable:  # SQLite stores a NUL character, PostgreSQL does not
        assert [e.event_id for e, _ in result.unstorable] == [episodes[150].event_id]
        assert result.unstorable[0][1]
        assert len(result.new_episodes) == 299
    else:
        assert len(result.new_episodes) == 300


def test_trainings_and_experiments_bisect_too(sink):
    now = ev.utc_now()
    common = dict(experiment_id="exp-bisect-mixed", worker_id="w", device_type="sot",
                  algorithm="cem")
    trainings = [ev.TrainingEvent(event_id=ev.new_event_id(), timestamp=now, run_id="r",
                                  iteration=i, objective=0.1, learning_rate=0.1,
                                  model_accuracy=0.5, **common) for i in range(20)]
    trainings[4] = poisoned(trainings[4], iteration=2**65)
    started = ev.ExperimentEvent(event_id=ev.new_event_id(), timestamp=now, run_id="r",
                                 status="started", **common)
    episodes = workload.make_episodes(50, "exp-bisect-mixed", seed=8)
    result = sink.write_batch(unchecked_batch([*episodes, *trainings, started]))
    assert [e.event_id for e, _ in result.unstorable] == [trainings[4].event_id]
    assert result.new_trainings == 19 and result.experiments == 1
    assert len(result.new_episodes) == 50


def test_a_refused_record_after_an_outage_clears_the_outage(sink):
    """The database refusing a record is an answer: a sink that was retrying through an
    outage is out of it (the worker's /ready would otherwise stay 503 on a stale outage
    until its next good batch)."""
    episode = workload.make_episodes(1, "exp-bisect-outage", seed=8)[0]
    sink.outage = "connection refused (the outage just over)"
    result = sink.write_batch(batch_of([poisoned(episode, run_id=f"{POISON}-alone")]))
    assert len(result.unstorable) == 1
    assert sink.outage is None
