"""One readiness probe per service, speaking the service's own protocol.

Usage: python compose/bare/check.py {kafka|postgres|opensearch|forward|otlp|jaeger|mlflow|ray|http URL [TEXT]}
Exit 0 when the service answers correctly, 1 otherwise (the reason on stderr).
Ports and credentials come from stgym.settings, like everything else.
"""
from __future__ import annotations

import base64
import os
import socket
import sys

from stgym import settings as stgym_settings

TIMEOUT_S = 5.0


def check_kafka(s: stgym_settings.Settings) -> None:
    """A metadata request through kafka-python: the broker answers with its cluster id."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=s.kafka_bootstrap,
        request_timeout_ms=int(TIMEOUT_S * 1000),
        bootstrap_timeout_ms=int(TIMEOUT_S * 1000),
        client_id="stgym-readiness",
        **s.kafka_client_options(),
    )
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers"):
            raise RuntimeError(f"metadata has no brokers: {cluster}")
    finally:
        admin.close()


def check_postgres(s: stgym_settings.Settings) -> None:
    """SELECT 1 as the application role over TCP (password auth)."""
    import psycopg2

    with psycopg2.connect(s.postgres_url, connect_timeout=int(TIMEOUT_S)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            if cur.fetchone() != (1,):
                raise RuntimeError("SELECT 1 returned something else")
    conn.close()


def check_opensearch(s: stgym_settings.Settings) -> None:
    """Cluster health yellow or green."""
    import requests

    resp = requests.get(f"{s.opensearch_url}/_cluster/health", timeout=TIMEOUT_S)
    resp.raise_for_status()
    status = resp.json().get("status")
    if status not in {"yellow", "green"}:
        raise RuntimeError(f"cluster health is {status}")


def check_forward(s: stgym_settings.Settings) -> None:
    """A Fluent forward-protocol round trip: an empty Forward-mode message with a `chunk`
    option must be acknowledged with {"ack": chunk}. The empty entry list produces no log."""
    import msgpack

    chunk = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(s.collector_forward_address, timeout=TIMEOUT_S) as sock:
        sock.sendall(msgpack.packb(["stgym.readiness", [], {"chunk": chunk}]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError("connection closed before the ack")
            unpacker.feed(data)
            for message in unpacker:
                if isinstance(message, dict) and message.get("ack") == chunk:
                    return
                raise RuntimeError(f"unexpected answer {message!r}")


def check_otlp(s: stgym_settings.Settings) -> None:
    """The collector's OTLP receiver: an empty OTLP/HTTP trace export is answered with 200
    (and adds no span); the gRPC port accepts connections."""
    import requests

    resp = requests.post(
        f"{s.collector_otlp_url}/v1/traces", data=b"",
        headers={"Content-Type": "application/x-protobuf"}, timeout=TIMEOUT_S,
    )
    if resp.status_code != 200:
        raise RuntimeError(f"OTLP/HTTP export answered HTTP {resp.status_code}")
    socket.create_connection((stgym_settings.LOOPBACK, s.collector_otlp_grpc_port),
                             timeout=TIMEOUT_S).close()


def check_jaeger(s: stgym_settings.Settings) -> None:
    """Jaeger's query API lists services (a query that reaches its OpenSearch storage), and
    its OTLP gRPC receiver accepts connections."""
    import requests

    resp = requests.get(f"{s.jaeger_url}/api/services", timeout=TIMEOUT_S)
    resp.raise_for_status()
    if "data" not in resp.json():
        raise RuntimeError(f"/api/services answered {resp.text[:200]!r}")
    socket.create_connection((stgym_settings.LOOPBACK, s.jaeger_otlp_grpc_port), timeout=TIMEOUT_S).close()


def check_mlflow(s: stgym_settings.Settings) -> None:
    """The tracking server's /health answers OK, an experiment search (a query of its backend
    store in PostgreSQL) with the credentials answers 200, and one without them 401 (the
    basic-auth app is on)."""
    import requests

    resp = requests.get(f"{s.mlflow_url}/health", timeout=TIMEOUT_S)
    if resp.status_code != 200 or resp.text.strip() != "OK":
        raise RuntimeError(f"/health answered HTTP {resp.status_code} {resp.text[:100]!r}")
    search = f"{s.mlflow_url}/api/2.0/mlflow/experiments/search"
    env = s.mlflow_auth_env()
    resp = requests.post(search, json={"max_results": 1}, timeout=TIMEOUT_S,
                         auth=(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]))
    if resp.status_code != 200:
        raise RuntimeError(f"experiments/search answered HTTP {resp.status_code} {resp.text[:200]!r}")
    resp = requests.post(search, json={"max_results": 1}, timeout=TIMEOUT_S)
    if resp.status_code != 401:
        raise RuntimeError(f"experiments/search without credentials answered HTTP "
                           f"{resp.status_code}, not 401: is the server's basic auth off?")


def check_ray(s: stgym_settings.Settings) -> None:
    """The Ray GCS at ray_address, asked with the token (RAY_AUTH_MODE=token), lists this
    host's node alive (ray-head and ray-worker of compose/bare/ray.sh)."""
    os.environ.update(s.ray_auth_env())
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    nodes = GcsClient(address=s.ray_address).get_all_node_info(
        timeout=TIMEOUT_S, state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
    addresses = sorted(info.node_manager_address for info in nodes.values())
    if s.host not in addresses:
        raise RuntimeError(f"no alive node of {s.host} among {addresses}")


def check_http(url: str, text: str | None) -> None:
    """HTTP 200 (and, if given, TEXT in the body)."""
    import requests

    resp = requests.get(url, timeout=TIMEOUT_S)
    if resp.status_code != 200:
        raise RuntimeError(f"{url} answered HTTP {resp.status_code}")
    if text is not None and text not in resp.text:
        raise RuntimeError(f"{url} does not contain {text!r}")


def main(argv: list[str]) -> int:
    s = stgym_settings.load()
    checks = {
        "kafka": check_kafka,
        "postgres": check_postgres,
        "opensearch": check_opensearch,
        "forward": check_forward,
        "mlflow": check_mlflow,
        "otlp": check_otlp,
        "jaeger": check_jaeger,
        "ray": check_ray,
    }
    try:
        if argv and argv[0] == "http":
            check_http(argv[1], argv[2] if len(argv) > 2 else None)
        elif argv and argv[0] in checks:
            checks[argv[0]](s)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as exc:  # any failure means "not ready"; say why
        print(f"{argv[0]}: not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
