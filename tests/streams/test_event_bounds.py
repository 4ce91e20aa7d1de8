"""Every bound of the event schema: each refusal carries its bounded reason label, at
construction (producers) and at decode (stream workers), and the edges themselves pass."""
import datetime as dt

import msgspec
import pytest

from stgym import events as ev
from streams import workload


def episode_fields(**overrides):
    """A valid episode's fields (as the schema names them), with overrides."""
    fields = msgspec.structs.asdict(workload.make_episodes(1, "exp", seed=3)[0])
    fields.update(overrides)
    return fields


def training_fields(**overrides):
    fields = dict(
        event_id=ev.new_event_id(), timestamp=ev.utc_now(), experiment_id="exp",
        run_id="run-1", worker_id="w0", device_type="stt-pma", algorithm="cem",
        iteration=1, objective=-0.3, learning_rate=1e-3, model_accuracy=0.9,
    )
    fields.update(overrides)
    return fields


def raw_of(fields) -> bytes:
    return msgspec.json.encode(fields)


def refused(raw: bytes, event_type=ev.EpisodeEvent) -> ev.InvalidEvent:
    with pytest.raises(ev.InvalidEvent) as caught:
        ev.decode(raw, event_type)
    assert caught.value.reason in ev.REASONS
    return caught.value


FUTURE = dt.timedelta(seconds=ev.MAX_CLOCK_SKEW_S + 60)

EPISODE_CASES = [
    # (field, bad value, reason)
    ("episode", -1, "out_of_range"),
    ("episode", 2**63, "out_of_range"),
    ("episode", 2**64, "out_of_range"),
    ("seed", -5, "out_of_range"),
    ("seed", 2**63, "out_of_range"),
    ("steps", -1, "out_of_range"),
    ("steps", ev.MAX_AGENT_STEPS + 1, "out_of_range"),
    ("sim_steps", -1, "out_of_range"),
    ("sim_steps", ev.MAX_SIM_STEPS + 1, "out_of_range"),
    ("energy_j", -1e-15, "out_of_range"),
    ("energy_j", 1e308, "out_of_range"),
    ("switching_time_s", -1e-9, "out_of_range"),
    ("switching_time_s", 2 * ev.MAX_SIM_TIME_S, "out_of_range"),
    ("total_reward", -2 * ev.MAX_ABS_SCORE, "out_of_range"),
    ("total_reward", 1e300, "out_of_range"),
    ("wall_time_s", -0.1, "out_of_range"),
    ("wall_time_s", ev.MAX_WALL_TIME_S * 2, "out_of_range"),
    ("sim_steps_per_s", -1.0, "out_of_range"),
    ("sim_steps_per_s", 1e16, "out_of_range"),
    ("experiment_id", "exp\x00", "bad_name"),
    ("run_id", "run\n1", "bad_name"),
    ("worker_id", "w\x1b[31m", "bad_name"),
    ("device_type", "dev\x7f", "bad_name"),
    ("algorithm", "cem\u2028", "bad_name"),
    ("timestamp", dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.timezone.utc), "bad_timestamp"),
    ("timestamp", dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), "bad_timestamp"),
]


@pytest.mark.parametrize(("field", "value", "reason"), EPISODE_CASES)
def test_episode_bound_refused_at_decode(field, value, reason):
    error = refused(raw_of(episode_fields(**{field: value})))
    assert error.reason == reason
    assert field in str(error) or reason == "out_of_range"


@pytest.mark.parametrize(("field", "value", "reason"), EPISODE_CASES)
def test_episode_bound_refused_at_construction(field, value, reason):
    with pytest.raises(ValueError, match=f"^{reason}: {field}"):
        ev.EpisodeEvent(**episode_fields(**{field: value}))


def test_future_timestamp_beyond_clock_skew_refused():
    error = refused(raw_of(episode_fields(timestamp=ev.utc_now() + FUTURE)))
    assert error.reason == "bad_timestamp"
    assert "now + 300 s" in error.detail


def test_unrepresentable_float_is_out_of_range():
    raw = raw_of(episode_fields(energy_j=0.125)).replace(b'"energy_j":0.125', b'"energy_j":1e400')
    assert refused(raw).reason == "out_of_range"


def test_nan_refused_at_construction():
    with pytest.raises(ValueError, match="out_of_range: energy_j"):
        ev.EpisodeEvent(**episode_fields(energy_j=float("nan")))


@pytest.mark.parametrize("overrides", [
    dict(episode=ev.INT64_MAX, seed=ev.INT64_MAX, steps=ev.MAX_AGENT_STEPS,
         sim_steps=ev.MAX_SIM_STEPS),
    dict(energy_j=ev.MAX_ENERGY_J, switching_time_s=ev.MAX_SIM_TIME_S,
         total_reward=-ev.MAX_ABS_SCORE, wall_time_s=ev.MAX_WALL_TIME_S,
         sim_steps_per_s=ev.MAX_SIM_STEPS_PER_S),
    dict(episode=0, seed=0, steps=0, sim_steps=0, energy_j=0.0, switching_time_s=None,
         wall_time_s=0.0, sim_steps_per_s=0.0),
    dict(timestamp=ev.MIN_TIMESTAMP, experiment_id="Ünïcode name · ok"),
    dict(timestamp=ev.utc_now() + dt.timedelta(seconds=ev.MAX_CLOCK_SKEW_S - 30)),
])
def test_edges_accepted(overrides):
    event = ev.EpisodeEvent(**episode_fields(**overrides))
    assert ev.decode(ev.encode(event), ev.EpisodeEvent) == event


TRAINING_CASES = [
    ("iteration", -1, "out_of_range"),
    ("iteration", 2**64, "out_of_range"),
    ("objective", 1e300, "out_of_range"),
    ("learning_rate", -1e-3, "out_of_range"),
    ("learning_rate", 1e7, "out_of_range"),
    ("model_accuracy", 1.5, "out_of_range"),
    ("model_accuracy", -0.1, "out_of_range"),
    ("experiment_id", "a\x00b", "bad_name"),
    ("timestamp", dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc), "bad_timestamp"),
]


@pytest.mark.parametrize(("field", "value", "reason"), TRAINING_CASES)
def test_training_bound_refused(field, value, reason):
    assert refused(raw_of(training_fields(**{field: value})), ev.TrainingEvent).reason == reason
    with pytest.raises(ValueError, match=f"^{reason}: {field}"):
        ev.TrainingEvent(**training_fields(**{field: value}))


def test_experiment_event_names_checked():
    raw = raw_of(dict(training_fields(), status="started"))
    fields = {k: v for k, v in msgspec.json.decode(raw).items()
              if k not in ("iteration", "objective", "learning_rate", "model_accuracy")}
    fields["run_id"] = "r\x00"
    assert refused(raw_of(fields), ev.ExperimentEvent).reason == "bad_name"


def test_detail_names_the_bad_value():
    error = refused(raw_of(episode_fields(energy_j=1e308)))
    assert "energy_j" in error.detail and "1e+308" in error.detail
