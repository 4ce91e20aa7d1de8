"""Every worker of a group gets a share: topics have streams.worker.PARTITIONS partitions
however they were created (by a worker, or auto-created by a producer that came first)."""
import re
from pathlib import Path

import pytest
import yaml

from streams import workload
from streams.worker import PARTITIONS, ensure_topics

REPO = Path(__file__).resolve().parents[2]


def test_broker_auto_creates_topics_with_the_workers_partition_count():
    """A producer publishing before any worker ran makes the broker create the topic; with one
    partition, one stream worker would read everything (issue 11's 12k instead of 34k)."""
    bare = (REPO / "compose" / "kafka" / "server.properties").read_text()
    assert re.search(r"^num\.partitions=(\d+)$", bare, re.M).group(1) == str(PARTITIONS)
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"] == str(PARTITIONS)


@pytest.mark.services
def test_ensure_topics_grows_a_topic_with_too_few_partitions(kafka_bootstrap, unique_id, caplog):
    from kafka.admin import KafkaAdminClient, NewTopic

    small, fresh = f"stgym.test-grow-{unique_id}", f"stgym.test-new-{unique_id}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(small, num_partitions=1, replication_factor=1)])
        assert ensure_topics(kafka_bootstrap, topics=(small, fresh)) == {small: PARTITIONS,
                                                                         fresh: PARTITIONS}
        assert f"{small} (1) had fewer than {PARTITIONS} partitions" in caplog.text
        # the broker's metadata shows a change a moment later
        workload.wait_until(lambda: {d["name"]: len(d["partitions"]) for d in admin.describe_topics(
            [small, fresh])} == {small: PARTITIONS, fresh: PARTITIONS}, 30, what="grown topic")
        caplog.clear()  # idempotent: nothing to grow the second time
        assert ensure_topics(kafka_bootstrap, topics=(small, fresh)) == {small: PARTITIONS,
                                                                         fresh: PARTITIONS}
        assert "fewer than" not in caplog.text
    finally:
        admin.delete_topics([small, fresh])
        admin.close()
