"""The bare-machine service scripts (compose/bare/): status of the real stack, idempotent `up`,
and the generic machinery (pid files, readiness timeout naming the service and its log, stop by
pid file, refusing a port someone else holds) on a throw-away service in a temporary run dir."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BARE = REPO / "compose" / "bare"
SERVICES = ["postgres", "kafka", "opensearch", "prometheus", "alertmanager", "collector",
            "postgres-exporter", "node-exporter", "blackbox-exporter", "mlflow", "jaeger", "api",
            "alert-webhook"]


def run(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_table(stdout: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in stdout.splitlines()[1:]:
        name, port, pid, state = line.split()
        rows[name] = (port, pid, state)
    return rows


@pytest.mark.services
def test_status_lists_every_service_healthy_with_port_and_pid(stgym_settings):
    result = run(["bash", str(BARE / "services.sh"), "status"], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].split() == ["SERVICE", "PORT", "PID", "STATE"]
    rows = status_table(result.stdout)
    assert list(rows) == SERVICES
    s = stgym_settings
    expected_ports = {
        "postgres": s.postgres_port, "kafka": s.kafka_port, "opensearch": s.opensearch_port,
        "prometheus": s.prometheus_port, "alertmanager": s.alertmanager_port,
        "collector": s.collector_forward_port, "postgres-exporter": s.postgres_exporter_port,
        "node-exporter": s.node_exporter_port, "blackbox-exporter": s.blackbox_exporter_port,
        "mlflow": s.mlflow_port, "jaeger": s.jaeger_query_port, "api": s.api_port,
        "alert-webhook": s.alert_webhook_port,
    }
    for name, (port, pid, state) in rows.items():
        assert int(port) == expected_ports[name], name
        assert state == "healthy", name
        assert Path(f"/proc/{pid}").exists(), name


@pytest.mark.services
def test_up_twice_leaves_running_services_alone():
    before = status_table(run(["bash", str(BARE / "services.sh"), "status"], timeout=300).stdout)
    result = run(["bash", str(BARE / "services.sh"), "up"], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SERVICES:
        assert f"{name} already running" in result.stderr, name
    after = status_table(run(["bash", str(BARE / "services.sh"), "status"], timeout=300).stdout)
    assert {n: r[1] for n, r in after.items()} == {n: r[1] for n, r in before.items()}
    assert "[timing] services up" in result.stdout


FAKE_SERVICE = r"""
source "$BARE/lib.sh"
svc_fake_port() { echo "$FAKE_PORT"; }
svc_fake_install() { :; }
svc_fake_start() { spawn fake "fake-service-marker" "$PYTHON" -c "import time; time.sleep(300)" fake-service-marker; }
svc_fake_ready() { port_open "$FAKE_PORT"; }
"""


def fake(tmp_path: Path, script: str, port: int, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"BARE": str(BARE), "FAKE_PORT": str(port), "PYTHON": sys.executable, "STGYM_RUN_DIR": str(tmp_path / "run"),
           "STGYM_READY_TIMEOUT": "3", "STGYM_STOP_TIMEOUT": "5"}
    return run(["bash", "-c", FAKE_SERVICE + script], env=env, timeout=timeout)


def test_readiness_timeout_names_the_service_and_its_log_and_down_stops_it(tmp_path):
    port = free_port()
    result = fake(tmp_path, "svc_start fake; svc_wait fake; echo unreachable", port)
    assert result.returncode == 1
    assert "unreachable" not in result.stdout
    log = tmp_path / "run" / "logs" / "fake.log"
    assert f"fake not ready after 3s (port {port}); log: {log}" in result.stderr
    pid = int((tmp_path / "run" / "pids" / "fake.pid").read_text().split()[0])
    assert Path(f"/proc/{pid}").exists()
    status = fake(tmp_path, "svc_status fake", port)
    assert status.stdout.split() == ["fake", str(port), str(pid), "unhealthy"]
    down = fake(tmp_path, "svc_down fake", port)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not (tmp_path / "run" / "pids" / "fake.pid").exists()
    assert fake(tmp_path, "svc_status fake", port).stdout.split() == ["fake", str(port), "-", "stopped"]


def test_a_recycled_pid_is_not_taken_for_the_service(tmp_path):
    """A pid file whose pid now belongs to another program (no marker) means 'stopped'."""
    port = free_port()
    (tmp_path / "run" / "pids").mkdir(parents=True)
    (tmp_path / "run" / "pids" / "fake.pid").write_text(f"{os.getpid()}\nfake-service-marker\n")
    result = fake(tmp_path, "svc_status fake", port)
    assert result.stdout.split() == ["fake", str(port), "-", "stopped"]
    fake(tmp_path, "svc_down fake", port)
    assert Path(f"/proc/{os.getpid()}").exists()  # we are still alive: never killed


def test_a_port_held_by_another_process_is_refused(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = fake(tmp_path, "svc_start fake", port)
    assert result.returncode == 1
    assert f"fake: port 127.0.0.1:{port} is already taken by a process these scripts did not start" \
        in result.stderr
    assert not (tmp_path / "run" / "pids" / "fake.pid").exists()


@pytest.mark.parametrize(("probe", "env_var"), [
    ("kafka", "STGYM_KAFKA_PORT"),
    ("postgres", "STGYM_POSTGRES_PORT"),
    ("opensearch", "STGYM_OPENSEARCH_PORT"),
    ("forward", "STGYM_COLLECTOR_FORWARD_PORT"),
])
def test_probes_say_not_ready_when_nothing_listens(probe, env_var):
    result = run([sys.executable, str(BARE / "check.py"), probe], env={env_var: str(free_port())},
                 timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{probe}: not ready: ")
