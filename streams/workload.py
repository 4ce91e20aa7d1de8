"""What `stgym bench pipeline` (and the tests) drive the stream workers with: synthetic
episodes, one record key per partition, and `stgym stream` child processes with their probes."""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

from stgym import events as ev


DEVICE_TYPES = ("stt-pma", "sot")
ALGORITHMS = ("ppo", "cem")


def make_episodes(n: int, experiment: str, seed: int = 0, runs: int = 4,
                  start: dt.datetime | None = None,
                  run_ids: list[str] | None = None) -> list[ev.EpisodeEvent]:
    """n deterministic EpisodeEvents over 2 device types x 2 algorithms, a few runs each
    (named `{experiment}-run{i}`, or the given run_ids, taken in turn)."""
    rng = random.Random(f"{experiment}/{seed}")  # event ids unique per experiment and seed
    start = start or ev.utc_now()
    run_ids = run_ids or [f"{experiment}-run{i}" for i in range(runs)]
    runs = len(run_ids)
    out = []
    for i in range(n):
        success = rng.random() < 0.7
        device = DEVICE_TYPES[i % 2]
        algorithm = ALGORITHMS[(i // 2) % 2]
        out.append(ev.EpisodeEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            timestamp=start + dt.timedelta(milliseconds=i),
            experiment_id=experiment, run_id=run_ids[i % runs],
            worker_id=f"w{i % runs}", device_type=device, algorithm=algorithm,
            episode=i, seed=seed * 1_000_003 + i, success=success,
            energy_j=rng.uniform(1e-14, 5e-12),
            switching_time_s=rng.uniform(1e-10, 5e-9) if success and rng.random() < 0.95 else None,
            steps=rng.randint(1, 20), total_reward=rng.uniform(-5.0, 1.0),
            sim_steps=rng.randint(100, 5000), wall_time_s=rng.uniform(1e-4, 1e-2),
            sim_steps_per_s=rng.uniform(1e5, 1e6),
        ))
    return out


def partition_keys(tag: str, partitions: int = 4) -> dict[int, bytes]:
    """One record key per partition (Kafka's default murmur2 partitioner)."""
    from kafka.partitioner.default import murmur2


    keys: dict[int, bytes] = {}
    i = 0
    while len(keys) < partitions:
        key = f"{tag}-{i}".encode()
        keys.setdefault((murmur2(key) & 0x7FFFFFFF) % partitions, key)
        i += 1
    return keys


def start_worker(bus_url: str, db_url: str, web_port: int, worker_id: int, app_id: str,
                 log_path: str, extra: list[str] | None = None) -> subprocess.Popen:
    """`stgym stream` as a child process (its own process group), logging to log_path."""
    cmd = [sys.executable, "-m", "stgym.cli", "--log-level", "INFO", "stream", "--bus", bus_url,
           "--db", db_url, "--web-port", str(web_port), "--worker-id", str(worker_id),
           "--app-id", app_id, *(extra or [])]
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket


    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:  # refused, reset, timed out: not answering (yet)
        return 0, b""


def wait_until(predicate, timeout_s: float, interval_s: float = 0.25, what: str = "condition"):
    """Poll predicate() until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # e.g. a service still starting
            last_error = error
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                       + (f" (last error: {last_error!r})" if last_error else ""))


def wait_ready(port: int, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait for 200 from /ready on `port`, answered by `proc` itself (its pid), not by some
    other process that happens to hold the port."""
    last = None  # the last answer, for the error: why the worker says it is not ready

    def ready():
        nonlocal last
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"stream worker exited with {proc.returncode} (port {port} taken?)")
        status, body = http_get(f"http://127.0.0.1:{port}/ready")
        last = (status, body)
        if status != 200:
            return False
        if proc is not None and json.loads(body).get("pid") != proc.pid:
            raise RuntimeError(f"port {port} is answered by another process, not the worker")
        return True

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.25)
    raise TimeoutError(f"stream worker on port {port} not ready after {timeout_s:.0f} s;"
                       f" its last answer: {last!r}")


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_workers_ready(workers: list[subprocess.Popen], ports: list[int], sink,
                       timeout_s: float = 120.0) -> None:
    """Every worker answers /ready itself, then the checking sink connects (tables migrated)."""
    for port, proc in zip(ports, workers):
        wait_ready(port, timeout_s, proc)
    sink.setup()


def stop_all(workers: list[subprocess.Popen], *closables) -> None:
    """SIGTERM every worker, then close the bus, sink and readers given (None is skipped)."""
    for proc in workers:
        stop_worker(proc)
    for thing in closables:
        if thing is not None:
            thing.close()


def stored_count(sink, experiment: str) -> int:
    """Episodes the store has counted into the KPI rows of `experiment`."""
    return sum(r["episodes_total"] for r in sink.query_kpis(experiment=experiment, percentiles=False))


def warm_up(publish, sink, experiment: str, events: list, wanted: int,
            timeout_s: float = 120.0) -> None:
    """Publish `events` (100 at a time, round and round, `publish(chunk)`) until the store has
    counted `wanted` episodes of `experiment`. Workers started at the latest offsets fix each
    partition's position only at their first fetch, and skip what was published before it, so
    one publish can be lost; once some arrive every partition's position is fixed."""
    k, deadline = 0, time.monotonic() + timeout_s
    while stored_count(sink, experiment) < wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream workers consumed no warm-up events ({experiment}) "
                               f"in {timeout_s:.0f} s")
        publish(events[k:k + 100])
        k = (k + 100) % len(events)
        time.sleep(0.5)
