"""The shared event schema: round trips and rejection reasons."""
import msgspec
import pytest

from stgym import events


def make_episode(**overrides):
    fields = dict(
        event_id=events.new_event_id(), timestamp=events.utc_now(), experiment_id="exp",
        run_id="run-1", worker_id="w0", device_type="stt-pma", algorithm="cem", episode=3,
        seed=7, success=True, energy_j=2.5e-13, switching_time_s=1.2e-9, steps=10,
        total_reward=0.5, sim_steps=1000, wall_time_s=0.01, sim_steps_per_s=1e5,
    )
    fields.update(overrides)
    return events.EpisodeEvent(**fields)


def test_episode_round_trip():
    event = make_episode()
    assert events.decode(events.encode(event), events.EpisodeEvent) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"x" * (events.MAX_EVENT_BYTES + 1), "oversized"),
        (b'{"event_id": "nope"}', "invalid_field"),
    ],
)
def test_rejections_name_their_reason(raw, reason):
    with pytest.raises(events.InvalidEvent) as caught:
        events.decode(raw, events.EpisodeEvent)
    assert caught.value.reason == reason


def test_unknown_schema_version_rejected():
    raw = msgspec.json.encode({**msgspec.to_builtins(make_episode()), "schema_version": 2})
    with pytest.raises(events.InvalidEvent) as caught:
        events.decode(raw, events.EpisodeEvent)
    assert caught.value.reason == "schema_version"


@pytest.mark.parametrize("energy", [-1.0, float("inf")])
def test_impossible_energy_rejected(energy):
    raw = msgspec.json.encode({**msgspec.to_builtins(make_episode()), "energy_j": energy})
    with pytest.raises(events.InvalidEvent) as caught:
        events.decode(raw, events.EpisodeEvent)
    assert caught.value.reason in {"out_of_range", "invalid_field"}  # inf encodes as null
