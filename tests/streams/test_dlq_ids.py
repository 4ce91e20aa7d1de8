"""A DLQ envelope's id is the same for every copy of one refused record (a worker killed
before its commit sends it again) and differs between records; `unique` keeps one per id."""
from __future__ import annotations

import dataclasses

from stgym import kpi
from streams import dlq
from streams.pipeline import dlq_envelope, read_dlq_envelope


def rejected(offset: int = 7, value: bytes = b"{not json") -> kpi.Rejected:
    return kpi.Rejected("stgym.episodes.v1", 2, offset, b"k", value, "bad_json", "malformed")


def test_copies_of_one_refused_record_share_their_id_and_others_do_not():
    first = read_dlq_envelope(dlq_envelope(rejected()))
    again = read_dlq_envelope(dlq_envelope(rejected()))
    assert len(first["dlq_id"]) == 64 and first["dlq_id"] == again["dlq_id"]
    other_offset = read_dlq_envelope(dlq_envelope(rejected(offset=8)))
    other_bytes = read_dlq_envelope(dlq_envelope(rejected(value=b"{other")))
    moved = read_dlq_envelope(dlq_envelope(dataclasses.replace(rejected(), partition=3)))
    assert len({first["dlq_id"], other_offset["dlq_id"], other_bytes["dlq_id"],
                moved["dlq_id"]}) == 4


def test_unique_keeps_the_first_copy_and_counts_the_others():
    a, b = (read_dlq_envelope(dlq_envelope(rejected(offset=o))) for o in (1, 2))
    legacy = {"reason": "bad_json"}  # an envelope from before the id: stands for itself
    records = dlq.unique([a, b, dict(a, rejected_at=0.0), legacy, dict(legacy), a])
    assert [r.envelope["dlq_id"] for r in records[:2]] == [a["dlq_id"], b["dlq_id"]]
    assert [r.copies for r in records] == [3, 1, 1, 1]
    assert records[0].envelope["rejected_at"] == a["rejected_at"]
