"""`stgym traces`: an experiment's traces from Jaeger's query API, with span durations.

The trainer's traces (service stgym-train, one per worker run: train_model > iteration >
physics_simulation / publish / reward_calculation) carry the tag `experiment`; a stream batch
(service stgym-stream, process_batch > validate / dlq_publish / db_commit) holds records of any
number of runs, so it is found by its links (Jaeger: FOLLOWS_FROM references) to the trainer
traces instead of by a tag.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import requests

from stgym.errors import ServiceUnavailable

TRAINER_SERVICE = "stgym-train"
STREAM_SERVICE = "stgym-stream"
TIMEOUT_S = 10.0
STREAM_LIMIT = 1500  # stream batches fetched per query (filtered by their links)


@dataclasses.dataclass
class TraceSummary:
    """One trace: its root span, when, how long, and the time per span name."""

    trace_id: str
    service: str
    root: str
    start: str  # RFC 3339 UTC
    duration_ms: float
    spans: dict[str, dict]  # name -> {"count", "total_ms", "max_ms"}
    links: list[str]  # trace ids this trace's spans link to

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def get_traces(jaeger_url: str, **params) -> list[dict]:
    """Jaeger's /api/traces with these query parameters (service, operation, tags, start, end,
    limit); ServiceUnavailable when Jaeger does not answer."""
    if isinstance(params.get("tags"), dict):
        params["tags"] = json.dumps(params["tags"])
    try:
        response = requests.get(f"{jaeger_url}/api/traces", params=params, timeout=TIMEOUT_S)
        response.raise_for_status()
    except requests.RequestException as error:
        raise ServiceUnavailable(
            f"Jaeger at {jaeger_url} does not answer ({type(error).__name__}); start it with "
            "`bash compose/bare/services.sh up jaeger`") from None
    return response.json().get("data") or []


def summarise(trace: dict) -> TraceSummary:
    spans = trace["spans"]
    ids = {span["spanID"] for span in spans}
    roots = [span for span in spans
             if not any(r["refType"] == "CHILD_OF" and r["spanID"] in ids
                        for r in span.get("references") or ())]
    root = min(roots or spans, key=lambda span: span["startTime"])
    start_us = min(span["startTime"] for span in spans)
    end_us = max(span["startTime"] + span["duration"] for span in spans)
    per_name: dict[str, dict] = {}
    for span in spans:
        ms = span["duration"] / 1000.0
        entry = per_name.setdefault(span["operationName"], {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
        entry["count"] += 1
        entry["total_ms"] = round(entry["total_ms"] + ms, 3)
        entry["max_ms"] = max(entry["max_ms"], ms)
    links = sorted({r["traceID"] for span in spans for r in span.get("references") or ()
                    if r["refType"] == "FOLLOWS_FROM" and r["traceID"] != trace["traceID"]})
    process = trace["processes"][root["processID"]]
    start = dt.datetime.fromtimestamp(start_us / 1e6, tz=dt.timezone.utc)
    return TraceSummary(
        trace_id=trace["traceID"], service=process["serviceName"], root=root["operationName"],
        start=start.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        duration_ms=(end_us - start_us) / 1000.0, spans=per_name, links=links,
    )


def experiment_traces(jaeger_url: str, experiment: str, since_s: int, limit: int,
                      now_s: float | None = None) -> list[TraceSummary]:
    """The trainer traces tagged `experiment` of the last `since_s` seconds (newest `limit`),
    then the stream batch traces that link to any of them, oldest first."""
    end_us = int((now_s or time.time()) * 1e6)
    start_us = end_us - since_s * 1_000_000
    trainer = [summarise(t) for t in get_traces(
        jaeger_url, service=TRAINER_SERVICE, tags={"experiment": experiment},
        start=start_us, end=end_us, limit=limit)]
    if not trainer:
        return []
    ids = {t.trace_id for t in trainer}
    stream = [s for s in (summarise(t) for t in get_traces(
        jaeger_url, service=STREAM_SERVICE, operation="process_batch",
        start=start_us, end=end_us, limit=STREAM_LIMIT)) if ids & set(s.links)]
    return sorted(trainer, key=lambda t: t.start) + sorted(stream, key=lambda t: t.start)


def print_traces(traces: list[TraceSummary], as_json: bool) -> None:
    if as_json:
        print(json.dumps([t.as_dict() for t in traces], indent=2))
        return
    if not traces:
        print("no traces")
        return
    for t in traces:
        linked = f"  links {len(t.links)} trace(s)" if t.links else ""
        print(f"{t.start}  {t.service:<14s} {t.root:<14s} {t.duration_ms:10.1f} ms  "
              f"{t.trace_id}{linked}")
        for name, entry in sorted(t.spans.items(), key=lambda item: -item[1]["total_ms"]):
            print(f"    {name:<20s} x{entry['count']:<5d} total {entry['total_ms']:10.1f} ms"
                  f"  max {entry['max_ms']:9.1f} ms")
