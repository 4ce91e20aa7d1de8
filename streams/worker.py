"""What every stream-worker engine shares: topics, the sink, metrics, the KPI collector, the
Processor, the DLQ bookkeeping, /ready and the web endpoints around the engine's main loop.

An engine (streams.app = Faust, streams.fastconsumer = aiokafka) subclasses `BaseWorker`,
implements `consume()` (blocks until stopped, returns the exit code) and `engine_ready()`, and
holds nothing else. The rule both engines keep: rejected records reach the DLQ and the batch
is committed to the database in one transaction BEFORE the Kafka offsets are acknowledged.
"""
from __future__ import annotations

import concurrent.futures
import logging
import socket

from stgym import events as ev, settings as settings_module
from stgym import httpserver
from streams.metrics import KpiCollector, ProcessMetrics
from streams.pipeline import Processor

log = logging.getLogger(__name__)
SOURCE_TOPICS = (ev.TOPIC_EPISODES, ev.TOPIC_TRAINING, ev.TOPIC_EXPERIMENTS)
PARTITIONS = 4


def ensure_topics(bootstrap: str, partitions: int = PARTITIONS, timeout_s: float = 30.0) -> None:
    """Create the source topics and the DLQ (idempotent) so workers can share partitions."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from stgym.errors import ServiceUnavailable

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stgym-stream-admin",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=10_000, **settings_module.kafka_options())
    except KafkaError as error:
        raise ServiceUnavailable(
            f"Kafka at {bootstrap} does not answer ({type(error).__name__}); "
            "start it with `make services-up`") from None
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1)
                  for t in (*SOURCE_TOPICS, ev.TOPIC_EPISODES_DLQ) if t not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


class BaseWorker:
    """One stream worker process; the engine subclass supplies the consuming loop."""

    engine = "base"
    default_app_id = "stgym-stream"

    def __init__(self, bus_url: str, db_url: str, web_port: int, worker_id: str = "0",
                 app_id: str | None = None, batch_size: int = 2000,
                 service: str | None = None, offset_reset: str = "earliest") -> None:
        from sinks.factory import open_sink
        from stgym.errors import UserError

        if not bus_url.startswith("kafka://"):
            raise UserError(f"stgym stream needs a Kafka bus (kafka://HOST:PORT), got {bus_url!r}")
        self.bus_url = bus_url
        self.bootstrap = bus_url[len("kafka://"):]
        self.worker_id = worker_id
        self.app_id = app_id or self.default_app_id
        self.service = service or f"stgym-stream-{worker_id}"
        self.sink = open_sink(db_url)
        self.metrics = ProcessMetrics(self.service)
        # Only the owner of episodes partition 0 exports the (global) KPI series, so that
        # sum() over workers is exact; ownership moves with Kafka's partition assignment.
        self.exports_kpis = False
        self.metrics.registry.register(KpiCollector(self.sink, enabled=lambda: self.exports_kpis))
        self.processor = Processor(self.sink, self.metrics)
        self.batch_size = batch_size
        self.web_port = web_port
        self.offset_reset = offset_reset
        self.started = False
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sink")

    # -- what an engine provides -----------------------------------------------------------
    def engine_ready(self) -> bool:
        """True once the engine holds its final partition assignment."""
        raise NotImplementedError

    def consume(self) -> int:
        """Consume until SIGTERM/SIGINT; returns the exit code."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        kafka_ok = kafka_reachable(self.bootstrap)
        db_ok = self.sink.ping()
        recovered = self.started and self.engine_ready()
        ok = kafka_ok and db_ok and recovered
        return ok, {"kafka": kafka_ok, "database": db_ok, "recovered": recovered,
                    "worker_id": self.worker_id, "exports_kpis": self.exports_kpis,
                    "engine": self.engine}

    def update_assignment(self, assigned, lag_of) -> None:
        """KPI export ownership and consumer_lag{topic} from the assigned partitions;
        lag_of(tp) is the partition's lag or None when unknown."""
        self.exports_kpis = any(tp.topic == ev.TOPIC_EPISODES and tp.partition == 0
                                for tp in assigned)
        per_topic: dict[str, int] = {}
        for tp in assigned:
            if tp.topic not in SOURCE_TOPICS:
                continue
            lag = lag_of(tp)
            if lag is not None:
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(lag, 0)
        for topic in SOURCE_TOPICS:
            self.metrics.consumer_lag.labels(topic=topic).set(per_topic.get(topic, 0))

    @staticmethod
    def log_rejected(rejected) -> None:
        log.warning("sent %d invalid record(s) to %s (first: %s)", len(rejected),
                    ev.TOPIC_EPISODES_DLQ, rejected[0].reason)

    def run(self) -> int:
        """Topics, migrations and the web endpoints around the engine's loop."""
        ensure_topics(self.bootstrap)
        self.sink.setup()
        host = settings_module.load().host
        server = httpserver.serve(self.web_port, self.metrics.registry, self.ready, host=host,
                           service=self.service)
        log.info("stream worker %s (%s): /metrics /health /ready on %s:%d",
                 self.worker_id, self.engine, host, self.web_port)
        try:
            return self.consume()
        finally:
            server.shutdown()
            self.sink.close()
