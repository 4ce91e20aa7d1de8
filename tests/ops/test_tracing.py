"""stgym.tracing without a trace backend: the no-endpoint path, W3C context in record headers
and batch links, log fields, and an unreachable endpoint that neither blocks nor loses count."""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stgym import tracing
from stgym.bus import MemoryBus
from stgym import events


def dead_endpoint() -> str:
    """An OTLP endpoint on a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def spans():
    """Tracing on (to a dead endpoint), every finished span also kept in memory."""
    assert tracing.configure("stgym-test", worker_id="w3", endpoint=dead_endpoint(),
                             sample_ratio=1.0)
    memory = InMemorySpanExporter()
    tracing.provider().add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    tracing.shutdown()


def test_no_endpoint_means_no_tracing_and_no_opentelemetry_import():
    code = (
        "import sys, logging; from stgym import tracing, logsetup\n"
        "on = tracing.configure('stgym-test', endpoint='')\n"
        "with tracing.span('x') as s: s.set_attribute('a', 1); h = tracing.headers()\n"
        "b = tracing.start_span('y'); b.end()\n"
        "print(on, h, tracing.links_from_headers([[('traceparent', b'00-' + b'1' * 32 + b'-' + b'2' * 16 + b'-01')]]),"
        " tracing.log_fields(), any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"STGYM_TRACE_ENDPOINT": "", "PATH": ""}).stdout
    assert out.split() == ["False", "[]", "[]", "{}", "False"]


def test_sdk_loads_with_the_first_span_not_with_configure():
    code = (
        "import sys; from stgym import tracing\n"
        f"on = tracing.configure('stgym-test', endpoint={dead_endpoint()!r})\n"
        "before = any(m.startswith('opentelemetry') for m in sys.modules)\n"
        "h = tracing.headers()\n"
        "with tracing.span('x'): inside = tracing.headers()[0][0]\n"
        "print(on, before, h, inside, tracing.stats()['queued'] + tracing.stats()['exporting'] + tracing.stats()['export_failed'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": ""}).stdout
    assert out.split() == ["True", "False", "[]", "traceparent", "1"]


def test_resource_names_the_service_host_and_worker(spans):
    with tracing.span("train_model", experiment="e1"):
        pass
    (finished,) = spans.get_finished_spans()
    attributes = finished.resource.attributes
    assert attributes["service.name"] == "stgym-test"
    assert attributes["stgym.worker_id"] == "w3"
    assert attributes["host.name"] == socket.gethostname()
    assert finished.attributes["experiment"] == "e1"


def test_headers_carry_the_current_span_and_a_batch_links_each_producer_span_once(spans):
    bus = MemoryBus("tracing-test")
    event_kwargs = dict(
        event_id=events.new_event_id(), timestamp=events.utc_now(), experiment_id="e",
        run_id="r", worker_id="w0", device_type="stt-pma", algorithm="cem", iteration=0,
        objective=1.0, learning_rate=0.1, model_accuracy=0.5,
    )
    producer_spans = []
    for _ in range(2):
        with tracing.span("publish") as publish:
            producer_spans.append(publish.get_span_context())
            for _ in range(3):
                bus.publish(events.TrainingEvent(**{**event_kwargs, "event_id": events.new_event_id()}),
                            headers=tracing.headers())
    records = bus.records(events.TOPIC_TRAINING)
    assert len(records) == 6
    assert records[0].headers[0][0] == "traceparent"
    links = tracing.links_from_headers([r.headers for r in records] + [None, ()])
    assert sorted(link.context.span_id for link in links) == sorted(c.span_id for c in producer_spans)
    assert {link.context.trace_id for link in links} == {c.trace_id for c in producer_spans}

    batch = tracing.start_span("process_batch", links=links, records=len(records))
    with tracing.use(batch):
        with tracing.span("validate"):
            pass
    batch.end()
    finished = {s.name: s for s in spans.get_finished_spans() if s.name != "publish"}
    assert finished["validate"].parent.span_id == finished["process_batch"].context.span_id
    assert len(finished["process_batch"].links) == 2


def traceparent(span_id: int) -> bytes:
    return f"00-{'1' * 32}-{span_id:016x}-01".encode()


def test_links_from_any_header_layout_never_raise_and_stop_at_the_span_link_limit(spans):
    # a traceparent not first, in a dict, in a bytearray, a null or garbage value, no pairs
    headers = [[("a", b"x"), ("traceparent", traceparent(1))], {"traceparent": traceparent(2)},
               [("traceparent", bytearray(traceparent(3)))], [("traceparent", None)],
               [("traceparent", b"zz")], [("x",)], None, ()]
    links = tracing.links_from_headers(iter(headers))
    assert sorted(link.context.span_id for link in links) == [1, 2, 3]
    # 2,000 records of 300 producer batches (each a fresh bytes object, as a consumer parses
    # them): one link per batch, at most what a span keeps
    many = [(("traceparent", bytes(bytearray(traceparent(1 + i // 7)))),) for i in range(2100)]
    links = tracing.links_from_headers(many)
    assert len(links) == tracing.MAX_LINKS
    assert len({link.context.span_id for link in links}) == tracing.MAX_LINKS


def test_log_records_carry_trace_and_span_id_inside_a_span(spans):
    from stgym import logcontext, logformat

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(logformat.to_document(record))
    handler.addFilter(logcontext.ContextFilter("stgym-test"))
    logger = logging.getLogger("stgym.test_tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with tracing.span("iteration") as current:
            logger.info("inside")
        context = current.get_span_context()
    finally:
        logger.removeHandler(handler)
    outside, inside = records
    assert "trace_id" not in outside
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    json.dumps(inside)


def test_unsampled_spans_give_no_log_fields_and_are_not_exported():
    tracing.configure("stgym-test", endpoint=dead_endpoint(), sample_ratio=0.0)
    try:
        with tracing.span("iteration"):
            assert tracing.log_fields() == {}
            flags = tracing.headers()[0][1].rsplit(b"-", 1)[1]  # the context still propagates,
            assert int(flags, 16) & 1 == 0  # marked not sampled
    finally:
        tracing.shutdown()
    assert tracing.stats()["queued"] == 0


def test_unreachable_endpoint_neither_blocks_nor_loses_count(monkeypatch):
    monkeypatch.setattr(tracing, "MAX_QUEUE_SIZE", 16)
    monkeypatch.setattr(tracing, "MAX_EXPORT_BATCH_SIZE", 4)
    assert tracing.configure("stgym-test", endpoint=dead_endpoint(), sample_ratio=1.0)
    for i in range(200):
        with tracing.span("iteration", i=i):
            pass
    counts = tracing.stats()
    done = threading.Event()
    # shutdown waits a bounded time for the dead endpoint (hang guard, not a speed check)
    threading.Thread(target=lambda: (tracing.shutdown(), done.set()), daemon=True).start()
    assert done.wait(60), "tracing.shutdown blocked on an unreachable endpoint"
    assert counts["dropped_queue_full"] > 0
    final = tracing.stats()
    assert final["exported"] == 0
    # every span is accounted for: dropped on the full queue, failed, or still queued at exit
    assert sum(final[k] for k in ("dropped_queue_full", "export_failed", "queued", "exporting")) == 200


def test_dropped_spans_are_a_prometheus_counter():
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    registry.register(tracing.SpanDropCollector())
    text = prometheus_client.generate_latest(registry).decode()
    counts = tracing.stats()
    assert (f'stgym_trace_spans_dropped_total{{reason="queue_full"}} '
            f'{float(counts["dropped_queue_full"])}') in text
    assert (f'stgym_trace_spans_dropped_total{{reason="export_failed"}} '
            f'{float(counts["export_failed"])}') in text


def test_batch_trace_steps_are_children_of_the_linked_batch_span(spans):
    with tracing.span("publish") as publish:
        headers = tracing.headers()
    batch = tracing.BatchTrace([headers, headers, None], records=3)
    with batch.step("validate"):
        assert tracing.log_fields()["span_id"] != format(publish.get_span_context().span_id, "016x")
    with batch.step("db_commit", events=3):
        pass
    batch.end()
    finished = {s.name: s for s in spans.get_finished_spans()}
    root = finished["process_batch"]
    assert root.parent is None and root.attributes["records"] == 3
    assert [link.context.span_id for link in root.links] == [publish.get_span_context().span_id]
    for name in ("validate", "db_commit"):
        assert finished[name].parent.span_id == root.context.span_id
    assert tracing.log_fields() == {}  # nothing left current


def test_batch_trace_without_tracing_is_a_no_op():
    batch = tracing.BatchTrace([[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]], 1)
    with batch.step("validate") as step:
        step.set_attribute("x", 1)
    batch.end()


def test_bench_alternates_off_and_on_and_takes_the_median_pair_ratio():
    from streams import tracebench

    order = []
    walls = iter([10.0, 10.2, 12.4, 12.0, 9.0, 9.9])  # pairs: +2 %, +3.3 %, +10 %

    def measure(mode, pair):
        order.append((pair, mode))
        return {"wall_s": next(walls)}

    pairs = tracebench._alternate(3, measure)
    assert order == [(0, "off"), (0, "on"), (1, "on"), (1, "off"), (2, "off"), (2, "on")]
    assert all(isinstance(pair["load"], float) for pair in pairs)
    cost = tracebench._cost(pairs, "wall_s", more_is_better=False)
    assert cost["cost"] == pytest.approx(12.4 / 12.0 - 1)
    assert (cost["min"], cost["max"]) == (pytest.approx(0.02), pytest.approx(0.1))
    throughput = tracebench._cost([{"off": {"x": 100.0}, "on": {"x": 97.0}}], "x", more_is_better=True)
    assert throughput["cost"] == pytest.approx(0.03)


def header(span_id: int) -> tuple:
    return (("traceparent", traceparent(span_id)),)


def test_headerless_records_link_to_the_publish_they_continue_across_batches(spans):
    # partition 0: key a's publish 1 (header on its first record), key b's publish 2 in
    # between, then a's publish 3; a consumer batch cut inside each of them
    log = [("t", 0, 0, b"a", header(1)), ("t", 0, 1, b"a", ()), ("t", 0, 2, b"b", header(2)),
           ("t", 0, 3, b"a", ()), ("t", 0, 4, b"b", ()), ("t", 0, 5, b"a", header(3)),
           ("t", 0, 6, b"a", ()), ("t", 0, 7, b"b", ())]
    publishes = tracing.OpenPublishes()

    def linked(records, runs=None):
        links = tracing.links_from_headers([r[4] for r in records], [r[:4] for r in records],
                                           publishes, runs)
        return sorted(link.context.span_id for link in links)

    assert linked(log[:2]) == [1]
    assert linked(log[2:5], [("t", 0, 3)]) == [1, 2]  # a's tail without a header: still 1
    assert linked(log[5:7]) == [3]  # a batch that starts with a header needs no memory
    assert linked(log[7:]) == [2]   # b's record after a's publish: b's, never a's
    # another key's record in another topic with a header is no publish of these keys
    assert linked([("u", 0, 0, b"a", header(9)), ("t", 0, 8, b"a", ())]) == [3, 9]


def test_a_gap_in_a_partition_forgets_its_publishes_rather_than_link_a_wrong_one(spans):
    publishes = tracing.OpenPublishes()

    def linked(records):
        return sorted(link.context.span_id for link in tracing.links_from_headers(
            [r[4] for r in records], [r[:4] for r in records], publishes))

    assert linked([("t", 1, 10, b"a", header(1)), ("t", 2, 10, b"c", header(5))]) == [1, 5]
    # offsets 11..19 of partition 1 went to another worker (a rebalance) whose records began
    # publish 4; partition 2 was read on without a gap
    assert linked([("t", 1, 20, b"a", ()), ("t", 2, 11, b"c", ())]) == [5]
    assert linked([("t", 1, 21, b"a", ())]) == []  # still unknown, not publish 1


def test_open_publishes_keep_at_most_max_keys_per_partition(spans):
    publishes = tracing.OpenPublishes(max_keys=2)
    records = [("t", 0, i, f"k{i}".encode(), header(i + 1)) for i in range(3)]
    publishes.traceparents([r[:4] for r in records], [r[4] for r in records])
    tail = [("t", 0, 3 + i, f"k{i}".encode()) for i in range(3)]
    values = publishes.traceparents(tail, [(), (), ()])
    assert values == {traceparent(2), traceparent(3)}  # k0, the least recent, is forgotten


def test_a_trainers_publish_puts_the_traceparent_on_its_first_record_only(spans, tmp_path):
    from producers.publisher import EpisodePublisher

    class Bus:
        def __init__(self):
            self.sent = []

        def publish(self, event, headers=None):
            self.sent.append(headers)

        def flush(self):
            pass

    class Batch:  # the EpisodeBatch fields the publisher reads
        def __init__(self, n):
            import numpy as np
            self.n, self.workers = n, None
            self.switching_time_s = np.full(n, 1e-9)
            self.wall_time_s = self.energy_j = self.total_reward = np.ones(n)
            self.seeds = self.steps = self.sim_steps = np.ones(n, dtype=int)
            self.success = np.ones(n, dtype=bool)

        def __len__(self):
            return self.n

    bus = Bus()
    publisher = EpisodePublisher.__new__(EpisodePublisher)
    publisher.config, publisher.bus, publisher.ledger = None, bus, tmp_path / "ledger"
    publisher.common = dict(experiment_id="e", run_id="r", worker_id="w0", device_type="d",
                            algorithm="cem")
    from producers.worker_stats import WorkerStats
    publisher.stats = WorkerStats()
    with tracing.span("publish"):
        publisher._publish(Batch(5))
    assert bus.sent[0][0][0] == "traceparent" and bus.sent[1:] == [None] * 4


def test_bench_rotates_more_modes_and_gives_a_bootstrap_interval_of_the_median():
    from streams import tracebench

    order = []
    pairs = tracebench._alternate(
        4, lambda mode, pair: order.append(mode) or {"cpu": 10.0 + pair * (mode != "off")},
        tracebench.BREAKDOWN_MODES)
    assert order[:8] == ["off", "headers", "sdk", "on", "headers", "sdk", "on", "off"]
    cost = tracebench._cost(pairs, "cpu", more_is_better=False, mode="sdk")  # 0, +10, +20, +30 %
    assert cost["cost"] == pytest.approx(0.15)
    assert cost["min"] <= cost["low"] <= cost["cost"] <= cost["high"] <= cost["max"]
    assert cost == tracebench._cost(pairs, "cpu", more_is_better=False, mode="sdk")  # seeded


def test_bench_batch_is_what_the_aiokafka_engine_gets_and_links_every_publish(spans):
    from streams import tracebench

    positions, headers, runs = tracebench._fetched_batch()
    assert len(positions) == len(headers) == tracebench.BATCH_RECORDS
    assert [count for _, _, count in runs] == [tracebench.BATCH_RECORDS // 4] * 4
    assert sum(1 for h in headers if h) == 4 * -(-tracebench.BATCH_RECORDS // tracebench.EPISODES_PER_PUBLISH)
    links = tracing.links_from_headers(headers, positions, tracing.OpenPublishes(), runs)
    assert len(links) == -(-tracebench.BATCH_RECORDS // tracebench.EPISODES_PER_PUBLISH)
