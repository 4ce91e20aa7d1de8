"""The one event schema shared by producers, streams and sinks (JSON on the wire, msgspec-validated).

Topics are versioned by name; an event carries `schema_version` too, so a consumer rejects a
version it does not know instead of misreading it.
"""
from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1
TOPIC_EPISODES = "stgym.episodes.v1"
TOPIC_TRAINING = "stgym.training.v1"
TOPIC_EXPERIMENTS = "stgym.experiments.v1"
TOPIC_EPISODES_DLQ = "stgym.episodes.dlq"
MAX_EVENT_BYTES = 64 * 1024

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EventId = Annotated[
    str,
    msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


def new_event_id() -> str:
    """A random UUID4 as its canonical lower-case string."""
    return str(uuid.uuid4())


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _require_finite(event: msgspec.Struct, *names: str, non_negative: bool = False) -> None:
    for name in names:
        value = getattr(event, name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if non_negative and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


class _Envelope(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Fields every event carries: identity, version, time and the run it belongs to."""

    event_id: EventId
    schema_version: Literal[1] = SCHEMA_VERSION
    timestamp: Timestamp
    experiment_id: Name
    run_id: Name
    worker_id: Name
    device_type: Name
    algorithm: Name


class EpisodeEvent(_Envelope, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One finished episode. Energies in J, times in s."""

    episode: NonNegativeInt
    seed: int
    success: bool
    energy_j: float
    switching_time_s: float | None
    steps: NonNegativeInt
    total_reward: float
    sim_steps: NonNegativeInt
    wall_time_s: float
    sim_steps_per_s: float

    def __post_init__(self) -> None:
        _require_finite(
            self, "energy_j", "switching_time_s", "wall_time_s", "sim_steps_per_s",
            non_negative=True,
        )
        _require_finite(self, "total_reward")


class TrainingEvent(_Envelope, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Progress of a trainer after one iteration; model_accuracy is the evaluation success rate."""

    iteration: NonNegativeInt
    objective: float
    learning_rate: float
    model_accuracy: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

    def __post_init__(self) -> None:
        _require_finite(self, "objective", "learning_rate")


class ExperimentEvent(_Envelope, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A run started or ended (status 'started', 'finished' or 'failed')."""

    status: Literal["started", "finished", "failed"]
    config: dict[str, str | int | float | bool | None] = {}


Event = EpisodeEvent | TrainingEvent | ExperimentEvent

TOPIC_OF: dict[type, str] = {
    EpisodeEvent: TOPIC_EPISODES,
    TrainingEvent: TOPIC_TRAINING,
    ExperimentEvent: TOPIC_EXPERIMENTS,
}
TYPE_OF_TOPIC: dict[str, type] = {topic: cls for cls, topic in TOPIC_OF.items()}


class InvalidEvent(ValueError):
    """A record that cannot be accepted; `reason` is a short bounded label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_encoder = msgspec.json.Encoder()
_decoders = {cls: msgspec.json.Decoder(cls) for cls in TOPIC_OF}


def encode(event: Event) -> bytes:
    """The event as compact JSON bytes."""
    return _encoder.encode(event)


def decode(raw: bytes, event_type: type[Event]) -> Event:
    """Validate raw bytes as `event_type`, raising InvalidEvent with reason
    'oversized', 'bad_json', 'schema_version' or 'invalid_field'."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        return _decoders[event_type].decode(raw)
    except msgspec.ValidationError as error:
        message = str(error)
        if "schema_version" in message:
            raise InvalidEvent("schema_version", message) from None
        raise InvalidEvent("invalid_field", message) from None
    except msgspec.DecodeError as error:
        raise InvalidEvent("bad_json", str(error)) from None


def decode_for_topic(raw: bytes, topic: str) -> Event:
    """Validate raw bytes as the event type that `topic` carries."""
    return decode(raw, TYPE_OF_TOPIC[topic])
