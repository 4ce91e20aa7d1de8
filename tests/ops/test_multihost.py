"""Several machines for real, as Linux network namespaces on one bridge (README "Running on
several machines" is this recipe): a services host (PostgreSQL, Kafka, OpenSearch, Prometheus,
Alertmanager, its collector, the Ray head, MLflow, Jaeger) started by compose/bare/services.sh
with STGYM_HOST = its address,
two trainer hosts x 2 workers and two stream hosts, each with its own log collector shipping to
the central OpenSearch; remote clients reach Kafka only through SASL/SCRAM and PostgreSQL only
with the generated password. A Ray head on the services host, both trainer hosts joined (token
authentication): one `stgym train --ray-address` spreads its rollouts over both, each episode
stored once, a wrong token refused. Mid-run a stream host dies (processes killed, link down)
and then a trainer host. Shown: every episode counted exactly once, every completed (ledgered) episode of
the lost trainer host stored, the lost stream host's partitions taken over, every remote worker
a Prometheus target (file_sd from the host list) that was up, logs searchable by host.
Jaeger and MLflow on the services host too: the trainers and stream workers trace (settings:
each to its own host's collector), and their traces reach Jaeger through the worker hosts'
collectors and the mutual-TLS hop; a trainer host's `stgym train` tracks its run in the
services host's MLflow, which asks every client for its basic-auth credentials (401 without).
The two hops that cross machines outside Kafka, PostgreSQL and Ray are authenticated too:
Prometheus scrapes the remote workers' /metrics with the generated bearer token (a scrape
without it is refused), and each worker host's collector ships its logs to the services host's
collector over OTLP with mutual TLS (a client without a certificate is refused, the plain
receivers listen on loopback only, as does OpenSearch); every log record arrives once, with
its host field.

Needs root (ip netns, veth, a bridge, unshare); every namespace, link and process is removed
at the end, also on failure. Timings of the phases are printed (pytest -s) and written to
<tmp>/multihost-timings.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "compose" / "bare"))
import hosts as hosts_module  # noqa: E402  (compose/bare/hosts.py)
from stgym import settings as settings_module  # noqa: E402

pytestmark = [pytest.mark.services, pytest.mark.multihost, pytest.mark.timeout(900)]

HOSTS = """\
# name      address       role      [workers]
services    10.231.0.1    services
trainer-1   10.231.0.11   trainer   2
trainer-2   10.231.0.12   trainer   2
stream-1    10.231.0.21   stream
stream-2    10.231.0.22   stream
"""
# mlflow and jaeger last: their starts wait for PostgreSQL and OpenSearch to be ready
SERVICES = ["postgres", "kafka", "opensearch", "prometheus", "alertmanager", "collector",
            "ray-head", "mlflow", "jaeger"]
EPISODES_PER_HOST = 40000
RAY_EPISODES = 256  # one CEM learner's, rolled out by 4 Ray workers over both trainer hosts
RAY_CPUS_PER_HOST = 2
BATCH = 64
APP_ID = "stgym-multihost"
# The plain-consumer engine: a Faust worker that lost its group peer mid-stream was seen
# stalled in its rebalance (faust "wait_empty: Waiting for tasks", minutes) before PostgreSQL
# ended dead clients' sessions (postgres.sh keepalives): its write waited on the dead peer's
# row lock. With them this test passed once with ENGINE = "faust" (docs/pipeline.md).
ENGINE = "aiokafka"
PY = sys.executable
SCRIPT = str(REPO / "compose" / "bare" / "services.sh")


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class Deployment:
    """The lab's hosts, each with its own run directory and STGYM_* environment."""

    def __init__(self, tmp: Path, hosts: str = HOSTS) -> None:
        self.tmp = tmp
        (tmp / "hosts.txt").write_text(hosts)
        self.hosts = {h.name: h for h in hosts_module.read_hosts(tmp / "hosts.txt")}
        self.lab = hosts_module.Lab(list(self.hosts.values()))
        self.services = self.hosts["services"].address
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}

    def env(self, name: str, **extra: str) -> dict:
        host = self.hosts[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STGYM_")}
        env.update(STGYM_HOST=host.address, STGYM_RUN_DIR=str(self.tmp / name),
                   STGYM_KAFKA_HEAP="384m", STGYM_OPENSEARCH_HEAP="512m",
                   # 2 CPUs per trainer host's Ray node, whatever the machine has: the learner's
                   # 4 one-CPU Ray tasks need both trainer hosts
                   STGYM_RAY_WORKER_CPUS=str(RAY_CPUS_PER_HOST),
                   STGYM_READY_TIMEOUT="300", PYTHONUNBUFFERED="1")
        if host.role != "services":
            # Another machine: the services' address, Kafka's SASL listener; its processes
            # trace to this machine's collector, every root span sampled.
            env.update(STGYM_SERVICES_HOST=self.services,
                       STGYM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                       STGYM_TRACE_ENDPOINT=settings_module.Settings().collector_otlp_url,
                       STGYM_TRACE_SAMPLE_RATIO="1.0")
        env.update(extra)
        return env

    def copy_secrets(self, name: str) -> None:
        """The services host's credentials, copied to machine `name`."""
        shutil.copytree(self.tmp / "services" / "secrets", self.tmp / name / "secrets")

    def sh(self, name: str, argv: list[str], timeout_s: float = 600, **extra) -> str:
        result = subprocess.run(self.lab.command(name, argv), env=self.env(name, **extra),
                                capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        assert result.returncode == 0, (f"{name}: {' '.join(argv)} failed\n"
                                        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result.stdout

    def py(self, name: str, code: str):
        """Run Python on host `name` (its settings); it prints one JSON value."""
        return json.loads(self.sh(name, [PY, "-c", code], timeout_s=120))

    def start(self, name: str, key: str, argv: list[str]) -> None:
        self.procs[key] = self.lab.run(name, argv, self.env(name), self.tmp / f"{key}.log",
                                       cwd=REPO)

    def timed(self, phase: str, start: float) -> None:
        self.timings[phase] = round(time.monotonic() - start, 1)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for name in self.hosts:
            if (self.tmp / name).exists():
                # the scripts' own clean-up: stop, and remove data dirs linked under /var/tmp
                subprocess.run(self.lab.command(name, ["bash", SCRIPT, "clean"]),
                               env=self.env(name), capture_output=True, timeout=180)
        self.lab.down()


@contextlib.contextmanager
def lab_deployment(tmp: Path, hosts: str = HOSTS):
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.fail("the multi-host test needs root, ip (iproute2) and unshare (util-linux)")
    d = Deployment(tmp, hosts)
    try:
        d.lab.up()
        yield d
    finally:
        d.close()
        print("\nmulti-host timings (s):", json.dumps(d.timings))
        (tmp / "multihost-timings.json").write_text(json.dumps(d.timings, indent=2))


@pytest.fixture
def deployment(tmp_path):
    with lab_deployment(tmp_path) as d:
        yield d


STORED = """
import json, psycopg2
from stgym import settings
with psycopg2.connect(settings.load().postgres_url) as c, c.cursor() as cur:
    cur.execute("SELECT event_id FROM episodes WHERE experiment_id = %s", [{experiment!r}])
    ids = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT COALESCE(SUM(episodes_total), 0) FROM kpi_cumulative WHERE experiment_id = %s",
                [{experiment!r}])
    total = int(cur.fetchone()[0])
print(json.dumps({{"ids": ids, "kpi_total": total}}))
"""

ASSIGNMENT = """
import json
from kafka import KafkaAdminClient
from stgym import settings


def walk(node):  # (topic, partitions) pairs anywhere in the decoded assignment
    if isinstance(node, dict):
        if "topic" in node and "partitions" in node:
            yield node["topic"], node["partitions"]
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk(value)


admin = KafkaAdminClient(bootstrap_servers=settings.load().kafka_bootstrap)
group = admin.describe_groups([{app_id!r}])[{app_id!r}]
admin.close()
print(json.dumps({{m["client_host"].strip("/"): sorted(p for t, ps in walk(m["member_assignment"])
                                                     if t == {topic!r} for p in ps)
                  for m in group["members"]}}))
"""

TARGETS = """
import json, requests
from stgym import settings
targets = requests.get(settings.load().prometheus_url + "/api/v1/targets", timeout=5).json()
print(json.dumps([[t["labels"].get("host"), t["labels"]["job"], t["scrapeUrl"], t["health"]]
                  for t in targets["data"]["activeTargets"] if "host" in t["labels"]]))
"""

LOG_HOSTS = """
import json, requests
from stgym import settings
s = settings.load()
query = {{"size": 0, "aggs": {{"hosts": {{"terms": {{"field": "attributes.host", "size": 20}}}}}}}}
r = requests.post(f"{{s.opensearch_url}}/{{s.logs_index}}*/_search", json=query, timeout=10)
print(json.dumps(sorted(b["key"] for b in r.json().get("aggregations", {{}}).get("hosts", {{}}).get("buckets", []))))
"""

# The worker hosts' records in the central store: their number, and those whose _id is not
# their log_id (the exporter's exactly-once key; 0 = the attribute survived the OTLP hop).
LOG_IDS = """
import json, requests
from stgym import settings
s = settings.load()
query = {{"size": 10000, "_source": ["attributes.log_id", "attributes.host"],
         "query": {{"terms": {{"attributes.host": {hosts!r}}}}}}}
hits = requests.post(f"{{s.opensearch_url}}/{{s.logs_index}}*/_search", json=query,
                     timeout=30).json()["hits"]["hits"]
print(json.dumps({{"records": len(hits), "hosts": sorted({{h["_source"]["attributes"]["host"] for h in hits}}),
                  "id_not_log_id": sum(h["_id"] != h["_source"]["attributes"].get("log_id") for h in hits)}}))
"""

# From another host: the metrics token and the collectors' certificates are asked for.
SCRAPE = """
import json, requests
from stgym import settings
s = settings.load()
url = "http://{address}:{port}"
print(json.dumps({{"no token": requests.get(url + "/metrics", timeout=5).status_code,
                  "wrong token": requests.get(url + "/metrics", timeout=5,
                                              headers={{"Authorization": "Bearer wrong"}}).status_code,
                  "token": requests.get(url + "/metrics", timeout=5,
                                        headers={{"Authorization": "Bearer " + s.scrape_token()}}).status_code,
                  "health": requests.get(url + "/health", timeout=5).status_code}}))
"""

NO_CLIENT_CERT = """
import json, socket, ssl
from stgym import settings
s = settings.load()
tls = s.collector_tls_files
result = {{}}
for case, chain in (("no client cert", None), ("client cert", (tls["client_cert"], tls["client_key"]))):
    context = ssl.create_default_context(cafile=tls["ca"])
    context.set_alpn_protocols(["h2"])
    if chain:
        context.load_cert_chain(*chain)
    try:
        with socket.create_connection(("{services}", s.collector_otlp_tls_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="stgym-collector") as conn:
                conn.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n")  # HTTP/2 preface
                result[case] = "answered" if conn.recv(64) else "closed"
    except (ssl.SSLError, OSError) as error:
        result[case] = f"refused: {{error}}"
# the collector's plain receivers and OpenSearch (no security plugin): loopback only
for port in (s.collector_otlp_grpc_port, s.collector_otlp_http_port, s.collector_forward_port,
             s.opensearch_port):
    try:
        socket.create_connection(("{services}", port), timeout=5).close()
        result[port] = "open"
    except OSError as error:
        result[port] = f"refused: {{error}}"
print(json.dumps(result))
"""


SESSIONS = """
import json, psycopg2
from stgym import settings
with psycopg2.connect(settings.load().postgres_url) as c, c.cursor() as cur:
    cur.execute("SELECT host(client_addr), application_name, state, wait_event_type, wait_event,"
                " round(extract(epoch FROM now() - xact_start)) FROM pg_stat_activity"
                " WHERE client_addr IS NOT NULL AND pid <> pg_backend_pid()")
    print(json.dumps([[str(v) for v in row] for row in cur.fetchall()]))
"""


WORKERS = """
import json, psycopg2
from stgym import settings
with psycopg2.connect(settings.load().postgres_url) as c, c.cursor() as cur:
    cur.execute("SELECT worker_id, COUNT(*) FROM episodes WHERE experiment_id = %s GROUP BY 1",
                [{experiment!r}])
    print(json.dumps(dict(cur.fetchall())))
"""


# On the services host (stgym/tracequery.py, as `stgym traces` asks Jaeger, with fewer
# traces: its 1,500 stream batches can take Jaeger longer than 10 s on a loaded machine): the
# hosts (host.name) of each service's newest traces, and how many of the newest stream
# batches link to the experiment's trainer traces (the trace context crossed Kafka);
# {"error": ...} while Jaeger does not answer in time.
TRACES = """
import json, time
from stgym import errors, settings, tracequery
url, result = settings.load().jaeger_url, {{}}
end_us = int(time.time() * 1e6)
window = dict(start=end_us - 3600 * 10**6, end=end_us, limit=20)
try:
    trainer = tracequery.get_traces(url, service=tracequery.TRAINER_SERVICE,
                                    tags={{"experiment": {experiment!r}}}, **window)
    stream = tracequery.get_traces(url, service=tracequery.STREAM_SERVICE,
                                   operation="process_batch", **window)
except errors.ServiceUnavailable as error:
    result["error"] = str(error)
else:
    for service, traces in ((tracequery.TRAINER_SERVICE, trainer),
                            (tracequery.STREAM_SERVICE, stream)):
        result[service] = sorted({{tag["value"] for trace in traces
                                  for process in trace["processes"].values()
                                  for tag in process.get("tags", []) if tag["key"] == "host.name"}})
    ids = {{trace["traceID"] for trace in trainer}}
    result["stream batches linked"] = sum(
        bool(ids & set(tracequery.summarise(trace).links)) for trace in stream)
print(json.dumps(result))
"""

# On a trainer host: the training's runs in the services host's MLflow (our client, with the
# credentials of settings), and what the server answers a client without or with wrong ones.
MLFLOW_RUNS = """
import json, requests
from producers import registry
from stgym import settings
s = settings.load()
client = registry.client(s.mlflow_url)
experiment = client.get_experiment_by_name({experiment!r})
runs = client.search_runs([experiment.experiment_id]) if experiment else []
parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
search = s.mlflow_url + "/api/2.0/mlflow/experiments/search"
print(json.dumps({{
    "parents": [[r.info.status, r.data.tags.get("stgym.host"), r.data.metrics.get("episodes")]
                for r in parents],
    "children": len(runs) - len(parents),
    "no credentials": requests.post(search, json={{"max_results": 1}}, timeout=10).status_code,
    "wrong password": requests.post(search, json={{"max_results": 1}}, timeout=10,
                                    auth=(s.mlflow_username, "wrong")).status_code}}))
"""


def stored_of(d: Deployment, experiment: str) -> dict:
    return d.py("services", STORED.format(experiment=experiment))


def ray_worker_ids(d: Deployment, name: str) -> set[str]:
    """The 12-hex-digit ids (as on the episodes: w0.ray-<id>) of the Ray workers that ran on
    host `name`: each wrote its log <run dir>/ray (compose/bare/ray.sh)/session_latest/logs/
    worker-<id>-<job>-<pid>.out."""
    logs = d.tmp / name / "ray" / "session_latest" / "logs"
    return {p.name.split("-")[1][:12] for p in logs.glob("worker-*.out")}


def ray_learner_over_both_trainer_hosts(d: Deployment, experiment: str) -> None:
    """One `stgym train --ray-address` on trainer-1: its 4 one-CPU Ray tasks run on both
    trainer hosts (2 CPUs each, the head none); every episode is stored exactly once; a client
    with a wrong token is refused by the Ray head."""
    t = time.monotonic()
    run_dir = d.tmp / "trainer-1" / "ray-train"
    d.sh("trainer-1", [PY, "-m", "stgym.cli", "--log-format", "json", "train", "--algo", "cem",
                       "--episodes", str(RAY_EPISODES), "--workers", "1",
                       "--ray-workers", str(2 * RAY_CPUS_PER_HOST),
                       "--ray-address", f"{d.services}:6379", "--experiment", experiment,
                       "--bus", f"kafka://{d.services}:9096", "--mlflow", "off",
                       "--run-dir", str(run_dir), "--json"], timeout_s=300)
    d.timed("ray learner over 2 trainer hosts trained in", t)
    hosts = {name: ray_worker_ids(d, name) for name in ("trainer-1", "trainer-2")}
    done = ledger_ids(run_dir)
    assert len(done) == RAY_EPISODES
    result = wait_for(lambda: (lambda r: r if set(r["ids"]) >= done else None)(
        stored_of(d, experiment)), 120, "the Ray learner's episodes stored")
    assert len(result["ids"]) == len(set(result["ids"])) == result["kpi_total"] == RAY_EPISODES
    workers = d.py("services", WORKERS.format(experiment=experiment))
    ran = {w.removeprefix("w0.ray-") for w in workers}
    assert all(w.startswith("w0.ray-") for w in workers), workers
    assert all(ran & ids for ids in hosts.values()), (
        f"episodes of Ray workers {sorted(ran)}; Ray workers per host {hosts}")
    d.timings["ray episodes per host"] = {
        name: sum(n for w, n in workers.items() if w.removeprefix("w0.ray-") in ids)
        for name, ids in hosts.items()}
    refused = subprocess.run(d.lab.command("trainer-2", [PY, str(REPO / "compose" / "bare" / "check.py"), "ray"]),
                             env=d.env("trainer-2", STGYM_RAY_AUTH_TOKEN="not-the-token"),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "Authentication" in refused.stderr, refused.stderr[-2000:]
    d.timed("ray phase", t)


def ledger_ids(run_dir: Path) -> set[str]:
    return {line for p in run_dir.glob("worker-*.ledger") for line in p.read_text().split()}


def test_two_trainer_hosts_two_stream_hosts_lose_nothing(deployment):
    d = deployment
    experiment = f"multihost-{os.getpid()}"
    t0 = time.monotonic()
    # Prometheus targets of every remote worker, from the host list (not hand-edited); written
    # before Prometheus starts so that it watches their folder from the start.
    d.sh("services", [PY, str(REPO / "compose" / "bare" / "hosts.py"), "targets",
                      str(d.tmp / "hosts.txt")])
    out = d.sh("services", ["bash", SCRIPT, "up", *SERVICES], timeout_s=700)
    d.timed("services host up", t0)
    # its script's own timings: "start" (mlflow's and jaeger's wait for PostgreSQL and
    # OpenSearch), "ready" (the wait for it, once the services before it were ready)
    d.timings["services host"] = {line.split(" ", 1)[1].rsplit(" ", 2)[0]: int(line.split()[-2])
                                  for line in out.splitlines() if line.startswith("[timing] ")}
    workers = [n for n, h in d.hosts.items() if h.role != "services"]
    t = time.monotonic()
    for name in workers:  # the services host's credentials, copied to each machine
        d.copy_secrets(name)
        d.sh(name, ["bash", SCRIPT, "up", "collector",
                    *(["ray-worker"] if d.hosts[name].role == "trainer" else [])], timeout_s=300)
    d.timed("worker collectors (and trainer hosts' Ray nodes) up", t)

    t = time.monotonic()
    for i, name in enumerate(["stream-1", "stream-2"]):
        d.start(name, name, [PY, "-m", "stgym.cli", "--log-format", "json", "stream",
                             "--bus", f"kafka://{d.services}:9096", "--worker-id", str(i),
                             "--web-port", "6066", "--app-id", APP_ID, "--engine", ENGINE])
    for name in ["stream-1", "stream-2"]:
        url = f"http://{d.hosts[name].address}:6066/ready"
        wait_for(lambda: subprocess.run(d.lab.command(name, ["curl", "-fsS", url]),
                                        capture_output=True).returncode == 0,
                 240, f"{name} /ready")
    d.timed("stream hosts ready", t)

    ray_learner_over_both_trainer_hosts(d, f"{experiment}-ray")

    t_run = time.monotonic()
    for i, name in enumerate(["trainer-1", "trainer-2"]):
        # trainer-1 tracks in MLflow (the default for a Kafka bus: settings.mlflow_url, the
        # services host's); trainer-2 is lost mid-run
        d.start(name, name, [PY, "-m", "stgym.cli", "--log-format", "json", "train",
                             "--algo", "random", "--episodes", str(EPISODES_PER_HOST),
                             "--workers", "2", "--first-worker", str(2 * i),
                             "--batch-size", str(BATCH), "--experiment", experiment,
                             "--bus", f"kafka://{d.services}:9096", "--metrics-port", "8000",
                             *(["--mlflow", "off"] if name == "trainer-2" else []),
                             "--run-dir", str(d.tmp / name / "train"), "--json"])

    def stored():
        return stored_of(d, experiment)

    # Every remote worker is a Prometheus target, and up.
    seen: list = []

    def all_up():
        seen[:] = d.py("services", TARGETS)
        return len(seen) == 6 and all(health == "up" for *_, health in seen) and list(seen)
    try:
        targets = wait_for(all_up, 90, "every remote worker up in Prometheus", 2.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; targets: {seen}") from None
    d.timed("all 6 remote targets up", t_run)
    # ... with the token: without it another host is refused; a stream worker's probes stay
    # open (a trainer serves nothing but /metrics).
    for name, port in (("stream-1", 6066), ("trainer-1", 8000)):
        codes = d.py("services", SCRAPE.format(address=d.hosts[name].address, port=port))
        assert codes == {"no token": 401, "wrong token": 401, "token": 200, "health":
                         200 if name == "stream-1" else 404}, (name, codes)
    # The services host's collector: mutual TLS only, for another host; OpenSearch unreachable.
    tls = d.py("stream-1", NO_CLIENT_CERT.format(services=d.services))
    assert "certificate required" in tls["no client cert"] and tls["client cert"] == "answered", tls
    assert all(tls[str(p)].startswith("refused") for p in (4317, 4318, 24224, 9200)), tls

    wait_for(lambda: len(stored()["ids"]) > 2000, 240, "2000 episodes stored")
    d.lab.kill("stream-2")
    d.lab.cut("stream-2")
    d.timed("stream-2 lost at", t_run)
    t_move = time.monotonic()
    assignment = wait_for(
        lambda: (lambda m: m if len(m) == 1 and len(next(iter(m.values()))) == 4 else None)(
            d.py("services", ASSIGNMENT.format(app_id=APP_ID, topic="stgym.episodes.v1"))),
        120, "stream-1 to own all 4 episode partitions")
    d.timed("partitions moved to stream-1 in", t_move)
    assert list(assignment) == [d.hosts["stream-1"].address]

    trainer2 = d.tmp / "trainer-2" / "train"
    wait_for(lambda: len(ledger_ids(trainer2)) > EPISODES_PER_HOST // 4, 240,
             "trainer-2 a quarter done")
    d.lab.kill("trainer-2")
    d.lab.cut("trainer-2")
    d.timed("trainer-2 lost at", t_run)

    trainer1 = d.procs["trainer-1"]
    trainer1.wait(600)
    assert trainer1.returncode == 0, (d.tmp / "trainer-1.log").read_text()[-3000:]
    d.timed("trainer-1 finished at", t_run)
    done1, done2 = ledger_ids(d.tmp / "trainer-1" / "train"), ledger_ids(trainer2)
    assert len(done1) == EPISODES_PER_HOST
    t = time.monotonic()
    try:
        result = wait_for(lambda: (lambda r: r if set(r["ids"]) >= done1 | done2 else None)(
            stored()), 300, "every completed episode stored")
    except AssertionError as error:
        ids = set(stored()["ids"])
        raise AssertionError(
            f"{error}: {len(done1 - ids)} of trainer-1's and {len(done2 - ids)} of trainer-2's "
            f"completed episodes missing; sessions: {d.py('services', SESSIONS)}") from None
    time.sleep(3.0)
    result = stored()
    d.timed("all completed episodes stored", t)
    ids = result["ids"]
    assert len(ids) == len(set(ids)) == result["kpi_total"], "an episode counted twice"
    # Beyond the ledgers only trainer-2's batches in flight when it died (one per worker).
    assert len(set(ids) - done1 - done2) <= 2 * BATCH
    d.timings.update(episodes_stored=len(ids), trainer_2_completed=len(done2),
                     stored_beyond_ledgers=len(set(ids) - done1 - done2))

    # Logs of every host, searchable by their host field in the central store.
    t = time.monotonic()
    logged: list = []

    def every_host_logged():
        logged[:] = d.py("services", LOG_HOSTS.format())
        return set(workers) <= set(logged)
    try:
        wait_for(every_host_logged, 120, "log records of every worker host", 2.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; hosts with logs: {logged}") from None
    d.timed("logs of every host searchable in", t)
    records = d.py("services", LOG_IDS.format(hosts=workers))
    assert records["hosts"] == sorted(workers) and records["id_not_log_id"] == 0, records
    d.timings["worker hosts' log records"] = records["records"]

    # trainer-1's run in the services host's MLflow, asked from trainer-1 with the credentials;
    # without them, or with a wrong password, the server answers 401.
    t = time.monotonic()
    runs = d.py("trainer-1", MLFLOW_RUNS.format(experiment=experiment))
    d.timed("MLflow runs read from trainer-1 in", t)
    assert runs["parents"] == [["FINISHED", "trainer-1", EPISODES_PER_HOST]], runs
    assert runs["children"] == 2, runs  # one per worker
    assert runs["no credentials"] == runs["wrong password"] == 401, runs

    # Traces of a trainer host and a stream host in Jaeger, through the worker hosts'
    # collectors and the mutual-TLS hop; stream batches linked to the trainer's traces.
    t = time.monotonic()
    traced: dict = {}

    def both_traced():
        traced.clear()
        traced.update(d.py("services", TRACES.format(experiment=experiment)))
        return ("trainer-1" in traced.get("stgym-train", ())
                and "stream-1" in traced.get("stgym-stream", ())
                and traced.get("stream batches linked", 0) > 0)
    try:
        wait_for(both_traced, 90, "traces of trainer-1 and stream-1 in Jaeger, linked", 2.0)
    except AssertionError as error:
        raise AssertionError(f"{error}; traces: {traced}") from None
    d.timed("traces of both hosts in Jaeger in", t)
    d.timings["traces"] = traced
    d.timed("whole run", t0)
    assert {tuple(x[:2]) for x in targets} >= {("trainer-1", "trainers"), ("stream-1", "stream-processors")}


LOCKER = """
import psycopg2, time
from stgym import settings
c = psycopg2.connect(settings.load().postgres_url)
with c.cursor() as cur:
    cur.execute("CREATE TABLE counter (k int PRIMARY KEY, n int)")
    cur.execute("INSERT INTO counter VALUES (1, 0)")
    c.commit()
    cur.execute("UPDATE counter SET n = n + 1 WHERE k = 1")  # its row lock, never committed
print("locked", flush=True)
time.sleep(3600)
"""

WRITER = """
import json, psycopg2, time
from stgym import settings
c = psycopg2.connect(settings.load().postgres_url)
with c.cursor() as cur:
    cur.execute("SET statement_timeout = '90s'")  # blocked for good would fail here
    t = time.monotonic()
    cur.execute("UPDATE counter SET n = n + 1 WHERE k = 1 RETURNING n")
    n = cur.fetchone()[0]
    c.commit()
print(json.dumps({"n": n, "waited_s": round(time.monotonic() - t, 1)}))
"""

DEAD_CLIENT_HOSTS = """\
services    10.231.1.1    services
client      10.231.1.2    stream
"""


def test_a_client_host_lost_mid_transaction_releases_its_locks(tmp_path):
    """A machine that dies inside a transaction (SIGKILL, link down: no FIN reaches the
    server) must not keep its row locks: the cause of a stalled stream once its peer host was
    lost while writing kpi_cumulative. The server's keepalives end the session, rolling the
    transaction back (about 25 s, compose/bare/postgres.sh)."""
    with lab_deployment(tmp_path, DEAD_CLIENT_HOSTS) as d:
        t0 = time.monotonic()
        d.sh("services", ["bash", SCRIPT, "up", "postgres"], timeout_s=300)
        d.timed("postgres up", t0)
        d.copy_secrets("client")
        d.start("client", "locker", [PY, "-c", LOCKER])
        wait_for(lambda: "locked" in (d.tmp / "locker.log").read_text(), 60, "the client's lock")
        d.lab.cut("client")  # first: not even the dying kernel's FIN gets out
        d.lab.kill("client")
        result = d.py("services", WRITER)
        d.timings["writer waited for the dead client's lock"] = result["waited_s"]
        assert result["n"] == 1, "the dead client's uncommitted update was kept"
