"""`stgym bench tracing`: what tracing at sample ratio 1.0 costs, side by side with tracing off,
in the same run, on the real services (Kafka, PostgreSQL, the collector, Jaeger).

1. Pipeline throughput. Two consumer groups run at once on the same records: one aiokafka
   stream worker with tracing off, one with tracing on (spans to the collector), each writing
   to its own fresh database. Every round publishes N episode events carrying the W3C
   `traceparent` header of a producer `publish` span per 64 records (what trainers send), and
   times each group until its database has committed all N. The cost is measured as events
   per stream-worker CPU second (independent of what else the machine runs) and as
   wall-clock events/s; the median over the rounds is reported.
2. Training wall time. `train` (CEM, 2 worker processes, Kafka bus) with tracing off and on,
   alternating (off, on, on, off, ...), the median wall time of each, and the workers' CPU
   seconds (what the wall time is on an idle machine; steadier on a loaded one).

3. What the costs are made of: the CPU a fresh process spends importing the SDK and setting
   tracing up (once per worker process), and the CPU of one span (a few per iteration or
   batch), measured in this process.

Goals: <= 3 % of pipeline throughput, <= 2 % of training wall time. On a shared 2-core machine
one round's wall times vary by more than that; the CPU-second ratio is the steadier number.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

PIPELINE_GOAL = 0.03
TRAINING_GOAL = 0.02
EPISODES_PER_PUBLISH = 64  # the trainers' default batch size


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


def _traced_payloads(events) -> list[tuple[bytes, bytes, list]]:
    """(key, value, headers) per event; one `publish` span per EPISODES_PER_PUBLISH events."""
    from stgym import events as ev
    from stgym import tracing

    payloads = []
    for start in range(0, len(events), EPISODES_PER_PUBLISH):
        with tracing.span("publish", episodes=EPISODES_PER_PUBLISH):
            headers = tracing.headers()
        payloads.extend((e.run_id.encode(), ev.encode(e), headers)
                        for e in events[start:start + EPISODES_PER_PUBLISH])
    return payloads


def pipeline(settings, quick: bool) -> dict:
    import psycopg2

    from sinks.factory import open_sink
    from stgym import events as ev
    from streams import workload
    from streams.bench import _cpu_seconds, _publish_fast, balanced_runs
    from streams.worker import ensure_topics

    token = secrets.token_hex(4)
    modes = ("off", "on")
    endpoint = {"off": "", "on": settings.collector_otlp_url}
    admin = psycopg2.connect(settings.postgres_url, connect_timeout=5)
    admin.autocommit = True
    head = settings.postgres_url.rpartition("/")[0]
    databases = {mode: f"stgym_tracebench_{mode}_{token}" for mode in modes}
    with admin.cursor() as cur:
        for name in databases.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    ensure_topics(settings.kafka_bootstrap)
    logdir = Path(tempfile.mkdtemp(prefix="stgym-tracebench-"))
    ports = {mode: workload.free_port() for mode in modes}
    workers, sinks = {}, {}
    rounds = []
    try:
        for i, mode in enumerate(modes):
            with _trace_env(endpoint[mode]):
                workers[mode] = workload.start_worker(
                    settings.kafka_url, f"{head}/{databases[mode]}", ports[mode], i,
                    f"stgym-tracebench-{mode}-{token}", str(logdir / f"{mode}.log"),
                    extra=["--engine", "aiokafka", "--batch-size", "4000",
                           "--offset-reset", "latest"])
            sinks[mode] = open_sink(f"{head}/{databases[mode]}")
        for mode in modes:
            workload.wait_workers_ready([workers[mode]], [ports[mode]], sinks[mode])
        n = 20_000 if quick else 40_000
        for r in range(2 if quick else 5):
            experiment = f"tracebench-{token}-{r}"
            events = workload.make_episodes(n, experiment, seed=r,
                                           run_ids=balanced_runs(experiment))
            payloads = _traced_payloads(events)
            cpu0 = {mode: _cpu_seconds([workers[mode]]) for mode in modes}
            t0 = time.perf_counter()
            _publish_fast(settings.kafka_bootstrap, ev.TOPIC_EPISODES, payloads)
            wall = {}
            while len(wall) < len(modes):
                for mode in modes:
                    if mode not in wall and workload.stored_count(sinks[mode], experiment) >= n:
                        wall[mode] = time.perf_counter() - t0
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError(f"benchmark round {r}: not all {n} events committed")
                time.sleep(0.05)
            cpu = {mode: _cpu_seconds([workers[mode]]) - cpu0[mode] for mode in modes}
            rounds.append({mode: {"events_per_s": n / wall[mode],
                                  "events_per_cpu_s": n / cpu[mode]} for mode in modes})
    finally:
        workload.stop_all(list(workers.values()), *sinks.values())
        with admin.cursor() as cur:
            for name in databases.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    result = {"events_per_round": n, "rounds": rounds}
    for measure in ("events_per_s", "events_per_cpu_s"):
        for mode in modes:
            result[f"{measure}_{mode}"] = statistics.median(r[mode][measure] for r in rounds)
        # each round's two groups saw the same records at the same time: pair them
        costs = [1 - r["on"][measure] / r["off"][measure] for r in rounds]
        result[f"{measure}_cost"] = statistics.median(costs)
        result[f"{measure}_cost_range"] = [min(costs), max(costs)]
    return result


def training(settings, quick: bool) -> dict:
    from producers.runner import train
    from producers.train_config import TrainConfig

    token = secrets.token_hex(3)
    endpoint = {"off": "", "on": settings.collector_otlp_url}
    order = ["off", "on", "on", "off"] if quick else ["off", "on", "on", "off", "off", "on"]
    episodes = 1024 if quick else 32768
    import resource

    def children_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the joined worker processes
        return usage.ru_utime + usage.ru_stime

    walls: dict[str, list[float]] = {"off": [], "on": []}
    cpus: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="stgym-tracebench-train-") as tmp:
        for i, mode in enumerate(order):
            cpu0 = children_cpu_s()
            with _trace_env(endpoint[mode]):
                summary = train(TrainConfig(
                    algorithm="cem", episodes=episodes, workers=2,
                    experiment=f"tracebench-{token}-{mode}", seed=i, bus_url=settings.kafka_url,
                    run_dir=str(Path(tmp) / str(i)), mlflow="off",
                ))
            if not summary.ok:
                raise RuntimeError(f"training round {i} ({mode}): workers {summary.failed_workers} failed")
            walls[mode].append(summary.wall_time_s)
            cpus[mode].append(children_cpu_s() - cpu0)
    result = {"runs": walls, "cpu_runs": cpus, "episodes": episodes, "workers": 2}
    for mode in walls:
        result[f"wall_s_{mode}"] = statistics.median(walls[mode])
        result[f"cpu_s_{mode}"] = statistics.median(cpus[mode])
    result["cpu_cost"] = result["cpu_s_on"] / result["cpu_s_off"] - 1
    result["wall_cost"] = result["wall_s_on"] / result["wall_s_off"] - 1
    result["wall_cost_range"] = [min(walls["on"]) / max(walls["off"]) - 1,
                                 max(walls["on"]) / min(walls["off"]) - 1]
    return result


def components(settings) -> dict:
    """CPU seconds of importing + configuring tracing in a fresh process, and of one span."""
    import subprocess

    code = ("import time; t = time.process_time(); from stgym import tracing; "
            f"tracing.configure('stgym-bench', endpoint={settings.collector_otlp_url!r}); "
            "print(time.process_time() - t)")
    setup = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout) for _ in range(3)]
    from stgym import tracing

    spans = 2000
    start = time.thread_time()
    for i in range(spans):
        with tracing.span("iteration", iteration=i):
            pass
    return {"setup_cpu_s": statistics.median(setup),
            "span_cpu_us": (time.thread_time() - start) / spans * 1e6}


def _require_collector(settings) -> None:
    """The collector's OTLP receiver must take an (empty) export, or the "on" side measures
    nothing."""
    import requests

    from stgym.errors import ServiceUnavailable

    url = f"http://{settings.host}:{settings.collector_otlp_http_port}/v1/traces"
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
    results = {"pipeline": pipeline(settings, args.quick), "training": training(settings, args.quick),
               "components": components(settings),
               "goals": {"pipeline_throughput_cost": PIPELINE_GOAL,
                         "training_wall_cost": TRAINING_GOAL},
               "spans": tracing.stats()}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    p, t = results["pipeline"], results["training"]

    def spread(values):
        return f"{100 * values[0]:+.1f}..{100 * values[1]:+.1f} %"

    rows = [
        ("pipeline events/s (aiokafka worker, wall clock)", f"{p['events_per_s_off']:,.0f}",
         f"{p['events_per_s_on']:,.0f}", f"{100 * p['events_per_s_cost']:+.1f} %",
         spread(p["events_per_s_cost_range"]), f"<= {100 * PIPELINE_GOAL:.0f} %"),
        ("pipeline events per stream-worker CPU second", f"{p['events_per_cpu_s_off']:,.0f}",
         f"{p['events_per_cpu_s_on']:,.0f}", f"{100 * p['events_per_cpu_s_cost']:+.1f} %",
         spread(p["events_per_cpu_s_cost_range"]), f"<= {100 * PIPELINE_GOAL:.0f} %"),
        (f"training wall time (CEM, {t['episodes']} episodes, 2 workers)",
         f"{t['wall_s_off']:.2f} s", f"{t['wall_s_on']:.2f} s",
         f"{100 * t['wall_cost']:+.1f} %", spread(t["wall_cost_range"]),
         f"<= {100 * TRAINING_GOAL:.0f} %"),
        ("training CPU seconds of the 2 worker processes", f"{t['cpu_s_off']:.2f} s",
         f"{t['cpu_s_on']:.2f} s", f"{100 * t['cpu_cost']:+.1f} %", "",
         f"<= {100 * TRAINING_GOAL:.0f} %"),
    ]
    print(f"{'stgym bench tracing (medians; cost = loss with tracing on)':52s} {'off':>9s} "
          f"{'on (1.0)':>9s} {'cost':>7s} {'spread':>16s} {'goal':>6s}")
    for row in rows:
        print(f"{row[0]:52s} {row[1]:>9s} {row[2]:>9s} {row[3]:>7s} {row[4]:>16s} {row[5]:>6s}")
    c = results["components"]
    print(f"made of: {c['setup_cpu_s']:.2f} CPU s per process to import and configure the SDK, "
          f"{c['span_cpu_us']:.0f} us of CPU per span (in the traced thread; export adds "
          "about as much in the exporter thread)")
    print(f"rounds: pipeline {len(p['rounds'])} x {p['events_per_round']:,} events, training "
          f"{len(t['runs']['off'])} + {len(t['runs']['on'])} runs; spans of this process: "
          f"{results['spans']}")
    return 0
