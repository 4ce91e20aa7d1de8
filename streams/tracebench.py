"""`stgym bench tracing`: what tracing at sample ratio 1.0 costs, side by side with tracing off,
in the same run, on the real services (Kafka, PostgreSQL, the collector, Jaeger).

Off and on alternate in pairs — off first in even pairs, on first in odd ones (off on, on off,
off on, ...; with more modes each pair's order is the previous one rotated) — so a neighbour's
burst or a drift of the machine's load hits both sides of a pair; a cost is the median over the
pairs of the pair's on/off ratio, with a bootstrap 95 % interval of that median (pairs
resampled) and the smallest and the largest pair; each pair is reported with the 1-minute load
average it ran at.

1. Pipeline. Per repetition one aiokafka stream worker (`stgym stream`, the CLI's default batch
   of up to 2,000 records) starts on a new consumer group; once it is ready it is stopped
   (SIGSTOP), N episode events are published, and it is continued (SIGCONT): it drains a backlog
   of N in full batches, as a worker behind its producers does — so its batch sizes, and its
   CPU per event, do not depend on how fast the producer ran on a shared machine. The primary
   measure is the worker's CPU per event (all its threads, the exporter's included: summed
   from /proc/<pid>/task/*/schedstat, nanoseconds, over the drain plus one export interval);
   also events/s = N / (time from SIGCONT until the database committed all N). With tracing
   on, a `publish` span per 64 records (a trainer's batch) whose `traceparent` rides on the
   first record of each key, as a trainer sends it; off, no headers and no tracing in the
   worker. Both sides of a pair get the same N events. `--breakdown` adds two modes: the
   headers but tracing off in the worker ("headers"), and tracing on in a worker whose records
   carry no header ("sdk": spans, no links), to split the cost.
2. Training wall time. `train()` (CEM, TRAIN_EPISODES episodes — about the length of the CEM
   training in docs/benchmarks.md — 2 spawned worker processes, Kafka bus): the wall time
   includes spawning the workers and their imports (the SDK's too), i.e. all of `stgym train`
   but the CLI's own start; also the workers' CPU seconds, and per pair side what shares the
   two cores with them: the tracing backend's CPU (collector, Jaeger, OpenSearch: each pid
   file's process with its children) — on one machine it indexes the traced side's spans on
   the trainers' cores, where a deployment has it on the services host — and the time the
   hypervisor took from this VM (steal), which moves a pair by more than the 2 % goal.
3. Training side by side (`training_at_once`, the training goal's primary measure): both
   sides at the same time, each a 1-worker training of one worker's share (AT_ONCE_EPISODES)
   pinned to its own core, the cores swapped every pair — so the machine's state at that
   moment (the hypervisor's steal, the services, the other core's work) is the same for both
   sides of a pair. On this VM 2. moves by about ±10 % between the sides of a pair (measured:
   −12…+23 % over 6 pairs of the same code), far more than the 2 % goal.
4. What the costs are made of, measured in this process: a fresh process's CPU to import and set
   up the SDK (once per process, at its first span), one span, a trainer iteration's 4 spans and
   one stream batch's spans and links (2,000 records of 32 producer spans), with the exporter's
   share. From these and the untraced CPU of 1. and 2. the bench also estimates both costs:
   steadier than the end-to-end ratios where other work shares the cores (at a load of 5–10 on
   2 cores, one repetition's CPU per event moves by ±15 %, more than the goals).

Goals: <= 3 % of pipeline throughput, <= 2 % of training wall time.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PIPELINE_GOAL = 0.03
TRAINING_GOAL = 0.02
EPISODES_PER_PUBLISH = 64  # the trainers' default batch size
MODES = ("off", "on")
BREAKDOWN_MODES = ("off", "headers", "sdk", "on")  # --breakdown: headers / SDK alone
PIPELINE_PAIRS, PIPELINE_EVENTS = 12, 20_000
BOOTSTRAP_RESAMPLES = 2000
TRAIN_PAIRS, TRAIN_EPISODES = 3, 131_072
AT_ONCE_PAIRS, AT_ONCE_EPISODES = 8, 65_536  # side by side: one worker's share each
BACKEND_SERVICES = ("collector", "jaeger", "opensearch")  # compose/bare pid files
BATCH_RECORDS = 2000  # `stgym stream --batch-size` default


@contextlib.contextmanager
def _trace_env(endpoint: str):
    """STGYM_TRACE_ENDPOINT for the processes started inside the block ("" = tracing off)."""
    previous = os.environ.get("STGYM_TRACE_ENDPOINT")
    os.environ["STGYM_TRACE_ENDPOINT"] = endpoint
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("STGYM_TRACE_ENDPOINT", None)
        else:
            os.environ["STGYM_TRACE_ENDPOINT"] = previous


def _alternate(pairs: int, measure, modes: tuple = MODES) -> list[dict]:
    """{"load", mode: ...} per pair: measure(mode, pair) for each mode, the order of `modes`
    rotated by one from pair to pair (two modes: off first in even pairs), with the 1-minute
    load average before the pair."""
    result = []
    for i in range(pairs):
        pair = {"load": round(os.getloadavg()[0], 2)}
        for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
            pair[mode] = measure(mode, i)
        result.append(pair)
    return result


def _cost(pairs: list[dict], measure: str, more_is_better: bool, mode: str = "on") -> dict:
    """Median, bootstrap 95 % interval of the median, min and max over the pairs of what
    `mode` costs against "off" in `measure` (a fraction: throughput lost, or time or CPU
    added), with the medians of both sides."""
    ratios = [p[mode][measure] / p["off"][measure] for p in pairs]
    costs = [1 - r if more_is_better else r - 1 for r in ratios]
    rng = random.Random(0)  # the same interval for the same pairs
    medians = sorted(statistics.median(rng.choices(costs, k=len(costs)))
                     for _ in range(BOOTSTRAP_RESAMPLES))
    return {"off": statistics.median(p["off"][measure] for p in pairs),
            "on": statistics.median(p[mode][measure] for p in pairs),
            "cost": statistics.median(costs), "min": min(costs), "max": max(costs),
            "low": medians[int(0.025 * len(medians))], "high": medians[int(0.975 * len(medians)) - 1]}


def _thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU nanoseconds each live thread of the process has run (/proc/<pid>/task/*/schedstat:
    exact, where user + system times come in 10 ms ticks)."""
    result = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                result[int(task)] = int(stat.read().split()[0])
    return result


def _cpu_split(pid: int, before: dict, after: dict) -> dict:
    """CPU seconds between two _thread_cpu_ns readings: all threads, the main thread (the
    event loop: fetch, validation, spans, links) and the busiest other thread (the sink's
    writes), kept per repetition in --json. (Dividing by the sink's CPU, the same rows in every
    mode, was meant to cancel the machine's load; at load 5-15 the main/sink ratio of one mode
    jumps between ~1.1 and ~2.0 from one repetition to the next, so it is no measure.)"""
    deltas = {tid: ns - before.get(tid, 0) for tid, ns in after.items()}
    main = deltas.pop(pid, 0)
    sink = max(deltas.values(), default=0)
    return {"cpu_s": (main + sum(deltas.values())) / 1e9, "main_cpu_s": main / 1e9,
            "sink_cpu_s": sink / 1e9}


def _machine_cpu_s(settings) -> dict:
    """CPU seconds so far of each tracing backend service (its pid file's process and that
    process's children; 0 for one not running) and the machine's steal seconds (all CPUs)."""
    import psutil

    result = {}
    for name in BACKEND_SERVICES:
        total = 0.0
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid_file = Path(settings.run_dir) / "pids" / f"{name}.pid"  # pid, then its config
            root = psutil.Process(int(pid_file.read_text().split()[0]))
            for process in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
        result[name] = total
    result["steal"] = psutil.cpu_times().steal
    return result


def _traced_payloads(events) -> list[tuple[bytes, bytes, list]]:
    """(key, value, headers) per event; one `publish` span per EPISODES_PER_PUBLISH events,
    its `traceparent` on the first record of each key (run id) of the publish, as a trainer's
    (stgym.tracing.OpenPublishes)."""
    from stgym import events as ev
    from stgym import tracing

    payloads = []
    for start in range(0, len(events), EPISODES_PER_PUBLISH):
        with tracing.span("publish", episodes=EPISODES_PER_PUBLISH):
            headers = tracing.headers()
        keys = set()
        for e in events[start:start + EPISODES_PER_PUBLISH]:
            key = e.run_id.encode()
            payloads.append((key, ev.encode(e), [] if key in keys else headers))
            keys.add(key)
    return payloads


def pipeline(settings, quick: bool, modes: tuple = MODES) -> dict:
    import signal

    import psycopg2

    from sinks.factory import open_sink
    from stgym import events as ev
    from stgym import tracing
    from streams import workload
    from streams.bench import _publish_fast, balanced_runs
    from streams.worker import ensure_topics

    token = secrets.token_hex(4)
    traced = {"off": False, "headers": False, "sdk": True, "on": True}  # the worker's SDK
    with_headers = {"off": False, "headers": True, "sdk": False, "on": True}
    n = 10_000 if quick else PIPELINE_EVENTS
    admin = psycopg2.connect(settings.postgres_url, connect_timeout=5)
    admin.autocommit = True
    head = settings.postgres_url.rpartition("/")[0]
    databases = {mode: f"stgym_tracebench_{mode}_{token}" for mode in modes}
    with admin.cursor() as cur:
        for name in databases.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    ensure_topics(settings.kafka_bootstrap)
    logdir = Path(tempfile.mkdtemp(prefix="stgym-tracebench-"))
    sinks = {mode: open_sink(f"{head}/{databases[mode]}") for mode in modes}
    payloads: dict[int, dict[bool, list]] = {}

    def measure(mode: str, pair: int) -> dict:
        experiment = f"tracebench-{token}-{pair}"
        if pair not in payloads:
            events = workload.make_episodes(n, experiment, seed=pair,
                                            run_ids=balanced_runs(experiment))
            payloads.clear()  # one pair's events at a time
            records = _traced_payloads(events)
            payloads[pair] = {True: records, False: [(key, value) for key, value, _ in records]}
        port = workload.free_port()
        with _trace_env(settings.collector_otlp_url if traced[mode] else ""):
            worker = workload.start_worker(
                settings.kafka_url, f"{head}/{databases[mode]}", port, pair,
                f"stgym-tracebench-{mode}-{token}-{pair}", str(logdir / f"{mode}-{pair}.log"),
                extra=["--engine", "aiokafka", "--offset-reset", "latest"])
        try:
            workload.wait_workers_ready([worker], [port], sinks[mode])
            # A record per partition stored before the stop: the consumer's `latest`
            # positions are fixed (at its first fetch; stopped before it, it would skip the
            # backlog and wait forever).
            warm = f"{experiment}-warm-{mode}"
            workload.warm_up(
                lambda chunk: _publish_fast(settings.kafka_bootstrap, ev.TOPIC_EPISODES, [
                    (key, value) for key, value, _ in _traced_payloads(chunk)]),
                sinks[mode], warm,
                workload.make_episodes(4, warm, seed=pair, run_ids=balanced_runs(warm)), 4)
            os.kill(worker.pid, signal.SIGSTOP)  # the events wait in Kafka: a backlog of n
            try:
                _publish_fast(settings.kafka_bootstrap, ev.TOPIC_EPISODES,
                              payloads[pair][with_headers[mode]])
            finally:
                cpu0, t0 = _thread_cpu_ns(worker.pid), time.perf_counter()
                os.kill(worker.pid, signal.SIGCONT)
            while workload.stored_count(sinks[mode], experiment) < n:
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError(f"tracing bench, pair {pair} ({mode}): not all {n} "
                                       f"events committed (log: {logdir})")
                time.sleep(0.05)
            wall = time.perf_counter() - t0
            time.sleep(tracing.SCHEDULE_DELAY_MS / 1000 + 0.5)  # all alike: the last export
            cpu = _cpu_split(worker.pid, cpu0, _thread_cpu_ns(worker.pid))
        finally:
            workload.stop_worker(worker)
        return {"events_per_s": n / wall, "cpu_us_per_event": cpu["cpu_s"] / n * 1e6,
                "wall_s": wall, **cpu}

    try:
        pairs = _alternate(2 if quick else PIPELINE_PAIRS, measure, modes)
        shutil.rmtree(logdir)  # kept when a repetition failed
    finally:
        for sink in sinks.values():
            sink.close()
        with admin.cursor() as cur:
            for name in databases.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    result = {"events_per_repetition": n, "batch_records": BATCH_RECORDS, "pairs": pairs,
              "cpu_us_per_event": _cost(pairs, "cpu_us_per_event", more_is_better=False),
              "events_per_s": _cost(pairs, "events_per_s", more_is_better=True)}
    result["breakdown"] = {mode: _cost(pairs, "cpu_us_per_event", more_is_better=False, mode=mode)
                           for mode in modes if mode not in MODES}
    return result


def training(settings, quick: bool) -> dict:
    import resource

    from producers.runner import train
    from producers.train_config import TrainConfig

    token = secrets.token_hex(3)
    endpoint = {"off": "", "on": settings.collector_otlp_url}
    episodes = 16_384 if quick else TRAIN_EPISODES

    def children_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the joined worker processes
        return usage.ru_utime + usage.ru_stime

    with tempfile.TemporaryDirectory(prefix="stgym-tracebench-train-") as tmp:
        def measure(mode: str, pair: int) -> dict:
            cpu0, machine0, batches = children_cpu_s(), _machine_cpu_s(settings), []
            with _trace_env(endpoint[mode]):
                summary = train(TrainConfig(
                    algorithm="cem", episodes=episodes, workers=2,
                    experiment=f"tracebench-{token}-{mode}", seed=pair,
                    bus_url=settings.kafka_url, run_dir=str(Path(tmp) / f"{pair}-{mode}"),
                    mlflow="off",
                ), progress=batches.append)  # once per published batch = per iteration
            if not summary.ok:
                raise RuntimeError(f"training pair {pair} ({mode}): workers "
                                   f"{summary.failed_workers} failed")
            machine = {name: seconds - machine0[name]
                       for name, seconds in _machine_cpu_s(settings).items()}
            return {"wall_s": summary.wall_time_s, "cpu_s": children_cpu_s() - cpu0,
                    "iterations": len(batches),
                    "backend_cpu_s": sum(machine[name] for name in BACKEND_SERVICES),
                    "backend_cpu_by_service_s": {name: machine[name] for name in BACKEND_SERVICES},
                    "steal_share": machine["steal"] / ((os.cpu_count() or 1) * summary.wall_time_s)}

        pairs = _alternate(1 if quick else TRAIN_PAIRS, measure)
    return {"episodes": episodes, "workers": 2, "pairs": pairs,
            "wall_s": _cost(pairs, "wall_s", more_is_better=False),
            "cpu_s": _cost(pairs, "cpu_s", more_is_better=False),
            "backend_cpu_s": {mode: statistics.median(pair[mode]["backend_cpu_s"] for pair in pairs)
                              for mode in MODES},
            "steal_share": [min(pair[mode]["steal_share"] for pair in pairs for mode in MODES),
                            max(pair[mode]["steal_share"] for pair in pairs for mode in MODES)]}


AT_ONCE_CHILD = """
import json, os, resource, sys
from producers.runner import train
from producers.train_config import TrainConfig
episodes, seed, experiment, bus_url, run_dir = sys.argv[1:6]
print("ready", flush=True)
sys.stdin.readline()
summary = train(TrainConfig(algorithm="cem", episodes=int(episodes), workers=1, seed=int(seed),
                            experiment=experiment, bus_url=bus_url, run_dir=run_dir, mlflow="off"))
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"ok": summary.ok, "wall_s": summary.wall_time_s,
                  "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
"""


def training_at_once(settings, quick: bool) -> dict:
    """Both sides at the same time, each a 1-worker `train()` (CEM, AT_ONCE_EPISODES episodes:
    one worker's share of the 2-worker training) pinned to its own core, the cores swapped from
    pair to pair: what the machine does meanwhile (steal, load, the services) hits both sides
    alike, so the pair's ratio is the tracing cost alone, where sequential pairs on this VM
    move by ±10 % between the sides."""
    import subprocess

    token = secrets.token_hex(3)
    endpoint = {"off": "", "on": settings.collector_otlp_url}
    episodes = 8_192 if quick else AT_ONCE_EPISODES
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        raise RuntimeError("bench tracing: side-by-side training needs 2 cores")

    def side(mode: str, core: int, pair: int, tmp: str) -> subprocess.Popen:
        env = {**os.environ, "STGYM_TRACE_ENDPOINT": endpoint[mode], "OMP_NUM_THREADS": "1"}
        args = [str(episodes), str(pair), f"tracebench-{token}-{mode}", settings.kafka_url,
                str(Path(tmp) / f"{pair}-{mode}")]
        child = subprocess.Popen([sys.executable, "-c", AT_ONCE_CHILD, *args], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: os.sched_setaffinity(0, {core}))
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"training side {mode} (pair {pair}) did not start")
        return child

    pairs = []
    with tempfile.TemporaryDirectory(prefix="stgym-tracebench-once-") as tmp:
        for pair in range(1 if quick else AT_ONCE_PAIRS):
            placed = dict(zip(MODES, cores if pair % 2 == 0 else cores[::-1]))
            result = {"load": round(os.getloadavg()[0], 2), "cores": placed}
            children = {mode: side(mode, core, pair, tmp) for mode, core in placed.items()}
            for child in children.values():
                child.stdin.write("go\n")
                child.stdin.flush()
            for mode, child in children.items():
                out, _ = child.communicate(timeout=600)
                row = json.loads(out.strip().splitlines()[-1])
                if child.returncode or not row["ok"]:
                    raise RuntimeError(f"training side {mode} (pair {pair}) failed")
                result[mode] = row
            pairs.append(result)
    return {"episodes": episodes, "pairs": pairs,
            "wall_s": _cost(pairs, "wall_s", more_is_better=False),
            "cpu_s": _cost(pairs, "cpu_s", more_is_better=False)}


def components(settings) -> dict:
    """CPU of importing + setting up the SDK in a fresh process (at its first span), of one
    span, and of one stream batch's spans and links, in this process."""
    import subprocess

    from stgym import tracing

    # what a trainer worker has imported before its first span (producers.runner), not timed
    code = ("import producers.runner, time; t = time.process_time(); from stgym import tracing; "
            f"tracing.configure('stgym-bench', endpoint={settings.collector_otlp_url!r}); "
            "tracing.span('setup').__enter__(); print(time.process_time() - t)")
    setup = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(3)]
    spans = 2000
    start = time.thread_time()
    for i in range(spans):
        with tracing.span("iteration", iteration=i):
            pass
    span_us = (time.thread_time() - start) / spans * 1e6
    tracing.force_flush()
    iterations = 500
    process0 = time.process_time()
    for i in range(iterations):  # a trainer iteration's spans and its batch's record headers
        with tracing.span("iteration", iteration=i):
            with tracing.span("physics_simulation", episodes=256):
                pass
            with tracing.span("publish", episodes=256):
                tracing.headers()
            with tracing.span("reward_calculation"):
                pass
    tracing.force_flush()
    iteration_us = (time.process_time() - process0) / iterations * 1e6
    positions, headers, runs = _fetched_batch()
    tracing.force_flush()
    batches = 200
    thread0, process0 = time.thread_time(), time.process_time()
    for _ in range(batches):
        batch = tracing.BatchTrace(headers, len(headers), positions, tracing.OpenPublishes(), runs)
        with batch.step("validate"):
            pass
        with batch.step("db_commit", events=len(headers)):
            pass
        batch.end()
    thread_us = (time.thread_time() - thread0) / batches * 1e6
    tracing.force_flush()
    return {"setup_cpu_s": statistics.median(setup), "span_cpu_us": span_us,
            "iteration_cpu_us_with_export": iteration_us,
            "batch_cpu_us": thread_us,
            "batch_cpu_us_with_export": (time.process_time() - process0) / batches * 1e6,
            "batch_links": len(tracing.links_from_headers(headers, positions,
                                                          tracing.OpenPublishes(), runs))}


def _fetched_batch(partitions: int = 4) -> tuple[list, list, list]:
    """A stream batch as the aiokafka engine gets it: BATCH_RECORDS records of publishes of
    EPISODES_PER_PUBLISH records over `partitions` keys (one per partition), the traceparent
    on the first record of each key of a publish (a fresh bytes object per record, as a
    consumer parses them), grouped by partition: (positions, headers, runs)."""
    from stgym import tracing

    by_partition: list[list] = [[] for _ in range(partitions)]
    for publish in range(-(-BATCH_RECORDS // EPISODES_PER_PUBLISH)):
        with tracing.span("publish"):
            header = tracing.headers()
        for i in range(EPISODES_PER_PUBLISH):
            part = i % partitions
            records = by_partition[part]
            records.append((("stgym.episodes.v1", part, len(records), f"run{part}".encode()),
                            [] if i >= partitions else [(k, bytes(bytearray(v))) for k, v in header]))
    kept = [records[:BATCH_RECORDS // partitions] for records in by_partition]
    positions = [position for records in kept for position, _ in records]
    headers = [headers for records in kept for _, headers in records]
    runs = [("stgym.episodes.v1", part, len(records)) for part, records in enumerate(kept)]
    return positions, headers, runs


def _require_collector(settings) -> None:
    """The collector's OTLP receiver must take an (empty) export, or the "on" side measures
    nothing."""
    import requests

    from stgym.errors import ServiceUnavailable

    url = f"{settings.collector_otlp_url}/v1/traces"
    try:
        response = requests.post(url, data=b"", timeout=5,
                                 headers={"Content-Type": "application/x-protobuf"})
        response.raise_for_status()
    except requests.RequestException as error:
        raise ServiceUnavailable(
            f"the collector's OTLP receiver at {url} does not answer ({type(error).__name__}); "
            "start the services with `make services-up`") from None


def main(args) -> int:
    from stgym import settings as settings_module
    from stgym import tracing

    settings = settings_module.load()
    _require_collector(settings)
    tracing.configure("stgym-bench", endpoint=settings.collector_otlp_url, sample_ratio=1.0)
    load0, time0 = os.getloadavg(), time.monotonic()
    modes = BREAKDOWN_MODES if getattr(args, "breakdown", False) else MODES
    results = {"pipeline": pipeline(settings, args.quick, modes),
               "training": training(settings, args.quick),
               "training_at_once": training_at_once(settings, args.quick),
               "components": components(settings),
               "goals": {"pipeline_throughput_cost": PIPELINE_GOAL,
                         "training_wall_cost": TRAINING_GOAL},
               "load_average": {"start": load0, "end": os.getloadavg()},
               "runtime_s": round(time.monotonic() - time0, 1),
               "spans": tracing.stats()}
    results["estimate"] = estimate(results)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(report(results))
    return 0


def estimate(results: dict) -> dict:
    """The costs from their measured parts (steadier than the end-to-end ratios on a loaded
    machine): a stream batch's tracing CPU against the CPU of its records with tracing off,
    and a training's (SDK set-up per worker process + spans per iteration) against the CPU of
    the untraced training. The batch part leaves out the header bytes' cost in the consumer."""
    p, t, c = results["pipeline"], results["training"], results["components"]
    batch_off_us = BATCH_RECORDS * p["cpu_us_per_event"]["off"]
    iterations = statistics.median(pair["on"]["iterations"] for pair in t["pairs"])
    traced_s = (t["workers"] * c["setup_cpu_s"]
                + iterations * c["iteration_cpu_us_with_export"] / 1e6)
    return {"pipeline": c["batch_cpu_us_with_export"] / batch_off_us,
            "training": traced_s / t["cpu_s"]["off"], "training_iterations": iterations}


def _verdict(cost: dict, goal: float) -> str:
    """met / NOT met when the whole 95 % interval of the median is on one side of the goal."""
    if cost["high"] <= goal:
        return "met"
    if cost["low"] > goal:
        return "NOT met"
    return "unresolved"


def report(results: dict) -> str:
    p, t, c = results["pipeline"], results["training"], results["components"]
    o, e = results["training_at_once"], results["estimate"]

    def row(label, cost, unit, goal=None):
        met = "" if goal is None else f"  <= {100 * goal:.0f} % " + _verdict(cost, goal)
        fmt = (lambda v: f"{v:,.0f}") if unit == "" else (lambda v: f"{v:.2f} {unit}")
        return (f"{label:52s} {fmt(cost['off']):>11s} {fmt(cost['on']):>11s} "
                f"{100 * cost['cost']:+6.1f} % [{100 * cost['low']:+.1f}, {100 * cost['high']:+.1f}]"
                f" {100 * cost['min']:+6.1f}..{100 * cost['max']:+.1f} %{met}")

    def loads(pairs):
        return ", ".join(f"{pair['load']:.1f}" for pair in pairs)

    lines = [
        f"{'stgym bench tracing (medians over pairs)':52s} {'off':>11s} {'on (1.0)':>11s} "
        f"{'cost':>8s} {'[95 % CI]':>15s} {'min..max':>14s}   goal",
        row(f"pipeline worker CPU per event ({p['events_per_repetition']:,}-event backlogs)",
            p["cpu_us_per_event"], "us", PIPELINE_GOAL),
        row("pipeline events/s (1 aiokafka worker draining it)", p["events_per_s"], "",
            PIPELINE_GOAL),
        *(row(f"  {mode} alone: CPU per event", cost, "us")
          for mode, cost in p["breakdown"].items()),
        row(f"training wall, both sides at once (1 worker each, own core; {o['episodes']:,})",
            o["wall_s"], "s", TRAINING_GOAL),
        row("  its worker's CPU", o["cpu_s"], "s", TRAINING_GOAL),
        row(f"training wall time (CEM, {t['episodes']:,} episodes, 2 workers, in turn)", t["wall_s"],
            "s", TRAINING_GOAL),
        row("training CPU of the 2 worker processes", t["cpu_s"], "s", TRAINING_GOAL),
        f"{'  sharing the cores: tracing backend CPU':52s} {t['backend_cpu_s']['off']:9.2f} s "
        f"{t['backend_cpu_s']['on']:9.2f} s  (collector + Jaeger + OpenSearch, per training); "
        f"steal {100 * t['steal_share'][0]:.0f}-{100 * t['steal_share'][1]:.0f} % of the cores",
        f"{'estimated from the parts below: pipeline':52s} {100 * e['pipeline']:+.1f} % of the "
        f"CPU per event (goal <= {100 * PIPELINE_GOAL:.0f} %), training "
        f"{100 * e['training']:+.1f} % of the workers' CPU (goal <= {100 * TRAINING_GOAL:.0f} %)",
        f"pairs: pipeline {len(p['pairs'])} at load {loads(p['pairs'])}; training at once "
        f"{len(o['pairs'])} at load {loads(o['pairs'])}; in turn {len(t['pairs'])} at load "
        f"{loads(t['pairs'])}; {results['runtime_s']:.0f} s in all",
        f"made of: {c['setup_cpu_s']:.2f} CPU s per process to import and set up the SDK (at its "
        f"first span), {c['span_cpu_us']:.0f} us per span; with the exporter's share "
        f"{c['iteration_cpu_us_with_export']:.0f} us per trainer iteration (4 spans, "
        f"{e['training_iterations']:.0f} iterations a training) and "
        f"{c['batch_cpu_us_with_export']:.0f} us per stream batch of {BATCH_RECORDS:,} records "
        f"({c['batch_links']} links; {c['batch_cpu_us']:.0f} us in the worker's thread)",
    ]
    return "\n".join(lines)
