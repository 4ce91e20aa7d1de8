"""`stgym logs search` (OpenSearch or the local JSON log file) and the OpenSearch log indices.

Where logs are
--------------
Processes ship their records (stgym/logsetup.py) through the collector, whose exporter writes
them to the log indices ``<settings.logs_index>*``: the daily ``stgym-logs-YYYY.MM.DD`` (UTC date
of the record) where the exporter names indices by date, else ``stgym-logs``. All of them get
the mappings of ``stgym/data/opensearch/logs-component-template.json`` (package data) through
the index template that `install_templates` puts into the cluster (idempotent; ``stgym logs
setup``, run by the service scripts once OpenSearch is up, before the first record arrives). Searches always cover
``<logs_index>*``.

A document is SS4O-shaped: ``body`` is the record's message, ``attributes`` holds the other
fields of the record (level, service, experiment_id, ...), ``@timestamp`` its nanosecond time.
`search` turns documents back into flat records like the lines of the local JSON log file, so
both stores print the same way.

Query semantics (both stores): every word of QUERY must occur in the message, logger, exception
or alert name (case-insensitive); ``--level`` is a minimum level; ``--service`` and
``--experiment`` match exactly; ``--since`` is a duration (stgym/durations.py: ``30s``, ``15m``, ``1h``, ``2d``, ``1w``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

from stgym import logcontext
from stgym import settings as settings_module
from stgym.errors import ServiceUnavailable, UserError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
COMPONENT_ID = "stgym-logs-mappings"
_TEXT_FIELDS = ("message", "logger", "alertname")


@dataclasses.dataclass(frozen=True)
class LogQuery:
    """What to look for; empty fields match everything."""

    text: str = ""
    level: str | None = None
    service: str | None = None
    experiment: str | None = None
    since: dt.timedelta | None = None
    limit: int = 50

    def levels(self) -> list[str]:
        return list(LEVELS[LEVELS.index(self.level):]) if self.level else list(LEVELS)

    def terms(self) -> list[str]:
        return [word.lower() for word in self.text.split() if word != "*"]


def parse_level(text: str | None) -> str | None:
    if text is None:
        return None
    level = text.upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LEVELS:
        raise UserError(f"--level expects one of {', '.join(LEVELS)}, got {text!r}")
    return level


def _parse_timestamp(text: str) -> dt.datetime:
    """RFC 3339 (nanoseconds allowed) -> aware datetime, truncated to microseconds."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return dt.datetime.fromisoformat(f"{base}.{micro}{zone}")


# --------------------------------------------------------------------------- local JSON file
def matches(record: dict[str, Any], query: LogQuery, now: dt.datetime) -> bool:
    """The local-file form of the query (same semantics as the OpenSearch query)."""
    if record.get("level") not in query.levels():
        return False
    if query.service and record.get("service") != query.service:
        return False
    if query.experiment and record.get("experiment_id") != query.experiment:
        return False
    if query.since is not None:
        try:
            if _parse_timestamp(record["timestamp"]) < now - query.since:
                return False
        except (KeyError, ValueError):
            return False
    terms = query.terms()
    if terms:
        exception = record.get("exception") or {}
        haystack = " ".join(
            [str(record.get(key, "")) for key in _TEXT_FIELDS]
            + [str(exception.get("type", "")), str(exception.get("message", ""))]
        ).lower()
        return all(term in haystack for term in terms)
    return True


def _local_lines(path: Path) -> Iterator[str]:
    """Lines of the log file and its rotated predecessors, oldest first."""
    rotated = sorted(path.parent.glob(f"{path.name}.*"), key=lambda p: -int(p.suffix[1:]))
    for file in [*rotated, path]:
        if file.is_file():
            with open(file, encoding="utf-8", errors="replace") as stream:
                yield from stream


def search_file(path: Path, query: LogQuery, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Matching records of the local JSON log file: the newest `limit`, in time order."""
    now = now or dt.datetime.now(dt.timezone.utc)
    found: list[dict[str, Any]] = []
    for line in _local_lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and matches(record, query, now):
            found.append(record)
    found.sort(key=lambda r: r.get("timestamp", ""))
    return found[-query.limit:] if query.limit > 0 else found


# --------------------------------------------------------------------------- OpenSearch
def client(url: str | None = None):
    from opensearchpy import OpenSearch

    url = url or settings_module.load().opensearch_url
    return OpenSearch(hosts=[url], timeout=10, max_retries=1, retry_on_timeout=False)


def _exact(field: str, values: list[str]) -> dict[str, Any]:
    """Exact match on a keyword field; also on `<field>.keyword`, for an index that was created
    by dynamic mapping before `install_templates` ran."""
    return {"bool": {"should": [{"terms": {field: values}}, {"terms": {f"{field}.keyword": values}}],
                     "minimum_should_match": 1}}


def opensearch_query(query: LogQuery, now: dt.datetime | None = None) -> dict[str, Any]:
    """The OpenSearch request body for a query."""
    filters: list[dict[str, Any]] = [_exact("attributes.level", query.levels())]
    if query.service:
        filters.append(_exact("attributes.service", [query.service]))
    if query.experiment:
        filters.append(_exact("attributes.experiment_id", [query.experiment]))
    if query.since is not None:
        now = now or dt.datetime.now(dt.timezone.utc)
        start = now - query.since
        filters.append({"range": {"@timestamp": {"gte": start.isoformat()}}})
    must: list[dict[str, Any]] = []
    terms = query.terms()
    if terms:
        must.append({"simple_query_string": {
            "query": " ".join(terms),
            "fields": ["body", "attributes.logger", "attributes.alertname",
                       "attributes.exception.type", "attributes.exception.message"],
            "default_operator": "and",
            "lenient": True,
        }})
    return {
        "query": {"bool": {"filter": filters, "must": must or [{"match_all": {}}]}},
        "sort": [{"@timestamp": {"order": "desc"}}],
        "size": query.limit,
    }


def to_record(document: dict[str, Any]) -> dict[str, Any]:
    """A stored SS4O document back into the flat record shape of the local log file."""
    record = dict(document.get("attributes") or {})
    body = document.get("body")
    if body is not None:
        record["message"] = body
    record.setdefault("timestamp", document.get("@timestamp"))
    record.pop("fluent.tag", None)
    return record


def search_opensearch(query: LogQuery, url: str | None = None, index: str | None = None,
                      now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Matching records from OpenSearch: the newest `limit`, in time order."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    settings = settings_module.load()
    url = url or settings.opensearch_url
    index = index or f"{settings.logs_index}*"
    try:
        response = client(url).search(
            index=index, body=opensearch_query(query, now),
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )
    except OSConnectionError as error:
        raise ServiceUnavailable(f"OpenSearch at {url} does not answer ({error.info})") from error
    except TransportError as error:
        raise ServiceUnavailable(f"OpenSearch at {url} refused the search: {error}") from error
    records = [to_record(hit["_source"]) for hit in response["hits"]["hits"]]
    records.sort(key=lambda r: str(r.get("timestamp", "")))  # nanosecond order within a ms
    return records


def install_templates(url: str | None = None) -> list[str]:
    """Put the component template (mappings) and the index template of the log indices."""
    settings = settings_module.load()
    os_client = client(url)
    component = json.loads(resources.files("stgym").joinpath(
        "data", "opensearch", "logs-component-template.json").read_text())
    os_client.cluster.put_component_template(name=COMPONENT_ID, body=component)
    template = settings.logs_index
    os_client.indices.put_index_template(name=template, body={
        "index_patterns": [f"{settings.logs_index}*"], "priority": 100,
        "composed_of": [COMPONENT_ID],
    })
    return [COMPONENT_ID, template]


# --------------------------------------------------------------------------- output
def format_record(record: dict[str, Any]) -> str:
    context = " ".join(
        f"{key}={record[key]}" for key in logcontext.CONTEXT_FIELDS if record.get(key) is not None
    )
    line = (f"{record.get('timestamp', '?')} {record.get('level', '?'):<8s} "
            f"{record.get('service', '?')} {record.get('logger', '?')}: {record.get('message', '')}")
    if context:
        line = f"{line}  [{context}]"
    exception = record.get("exception")
    if isinstance(exception, dict) and exception.get("type"):
        line = f"{line}\n    {exception['type']}: {exception.get('message', '')}"
    return line


def print_records(records: Iterable[dict[str, Any]], as_json: bool) -> None:
    records = list(records)
    if as_json:
        print(json.dumps(records, ensure_ascii=False))
        return
    for record in records:
        print(format_record(record))
