"""Training runs: K workers, each a trainer on its own seed stream publishing to the bus.

Python API (what `stgym train` and `stgym demo` call)::

    from producers.runner import train
    from producers.train_config import TrainConfig
    from stgym.bus import open_bus

    bus = open_bus("memory")                       # or None: open config.bus_url per worker
    summary = train(TrainConfig(algorithm="cem", episodes=512, workers=2, experiment="demo"),
                    bus=bus, progress=lambda p: print(p.episodes, p.success_rate))
    summary.success_rate, summary.energy_per_switch_j, summary.policy_path

With an in-process bus object (the memory bus) the workers run one after the other in this
process, on that bus. With `bus=None` and a Kafka URL in `config.bus_url`, each worker is a
spawned process with its own Kafka producer, its own /metrics (port `metrics_port + i`:
`memory_usage_bytes{service}`, `simulation_steps_per_second{experiment,device_type,algorithm}`)
and its own ledger. `progress` is called in the calling thread with a `RunProgress` after every
batch of episodes.

Delivery contract. A worker publishes the EpisodeEvents of a batch (one trainer iteration, at
most `batch_size` episodes), flushes the bus — which returns once the broker acknowledged every
record (acks=all, idempotent producer, so retries never duplicate) — and only then appends the
batch's event ids to its ledger `<run_dir>/worker-<i>.ledger` (one line each, one write). An
episode is *completed* when its id is in a ledger. A killed worker therefore loses no completed
episode, and at most its one unacknowledged batch may be on the bus beyond its ledger.
"""
from __future__ import annotations

import contextlib
import functools
import dataclasses
import logging
import math
import multiprocessing
import os
import pickle
import secrets
import signal
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from producers import tracking
from producers.publisher import EpisodePublisher
from producers.rollout import EpisodeBatch, PulsePolicy, device_type, episode_task
from producers.train_config import TrainConfig, worker_episodes
from producers.trainers import AGENTS, TRAINERS, agent_trainer_class
from producers.worker_metrics import WorkerMetrics
from producers.worker_stats import RunProgress, TrainSummary, WorkerStats, batch_totals, summarise
from stgym import settings as settings_module, tracing
from stgym.bus import Bus, open_bus, parse_bus_url

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- one worker

def run_worker(config: TrainConfig, index: int, token: str, bus: Bus,
               on_batch: Callable[[int, EpisodeBatch], None],
               on_iteration: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train on worker `index`'s share; returns its stats, best pulse and final objective.
    `on_iteration(index, iteration, metrics)`: each iteration's MLflow metrics (tracking)."""
    from stgym.logcontext import bound_context

    number = config.first_worker + index
    run_id = f"{config.experiment}.{token}.w{number}"
    task = episode_task(config.env_id, config.env_kwargs)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, number]))
    if config.algorithm in AGENTS:
        trainer = agent_trainer_class()(
            config.algorithm, config.env_id, config.env_kwargs, config.options, rng,
            Path(config.run_dir) / f"model-w{number}.zip", config.ray_workers,
            config.ray_address,
        )
    else:
        trainer = TRAINERS[config.algorithm](task, config.options, rng)
        if config.ray_workers:
            from producers.ray_rollouts import RayRollouts

            trainer.rollout = RayRollouts(config.ray_workers, config.ray_address)
    settings = settings_module.load()
    metrics = WorkerMetrics(
        None if config.metrics_port is None else config.metrics_port + index, settings.host,
        {"experiment": config.experiment, "device_type": device_type(task),
         "algorithm": config.algorithm},
    )
    run_dir = Path(config.run_dir)
    publisher = EpisodePublisher(
        config, index, run_id, device_type(task), bus, run_dir / f"worker-{index}.ledger",
        metrics, on_batch,
    )
    with bound_context(experiment_id=config.experiment, run_id=run_id), tracing.span(
        "train_model", experiment=config.experiment, run_id=run_id, worker_id=f"w{number}",
        algorithm=config.algorithm, env_id=config.env_id,
    ):
        log.info("worker w%d: %s on %s, %d episodes", number, config.algorithm, config.env_id,
                 worker_episodes(config, index))
        publisher.experiment("started")
        try:
            pulse = trainer.run(worker_episodes(config, index), publisher if on_iteration is None
                                else tracking.IterationTap(publisher, functools.partial(on_iteration, index)))
        except BaseException:
            publisher.experiment("failed")
            raise
        finally:
            metrics.close()
            trainer.close()  # its Ray workers: a spawned worker runs no atexit handler (Ray's)
        publisher.experiment("finished")
    extra = trainer.summary() if hasattr(trainer, "summary") else {}
    return {
        "run_id": run_id, "stats": dataclasses.asdict(publisher.stats),
        "pulse": None if pulse is None else [float(a) for a in pulse],
        "stop": trainer.best_stop(),
        "objective": publisher.last_objective,
        "extra": extra,
    }


def _worker_process(config: TrainConfig, index: int, token: str, messages) -> None:
    """Entry point of a spawned worker: its own bus, logging, and a pipe to the parent."""
    from stgym import logsetup

    logsetup.configure_logging(
        "stgym-train", config.log_format, config.log_level,
        worker_id=f"w{config.first_worker + index}",
    )
    tracing.configure("stgym-train", worker_id=f"w{config.first_worker + index}")
    (Path(config.run_dir) / f"worker-{index}.pid").write_text(f"{os.getpid()}\n")
    bus = open_bus(config.bus_url)
    try:
        def on_batch(i, batch):
            messages.send(("batch", batch_totals(batch)))

        def on_iteration(i, step, metrics):
            messages.send(("iteration", (step, metrics)))

        result = run_worker(config, index, token, bus, on_batch,
                            None if config.mlflow == tracking.OFF else on_iteration)
        bus.close()
        messages.send(("done", result))
    except SystemExit as stop:  # SIGTERM (the bus turns it into SystemExit)
        log.warning("worker w%d stopped (exit %s); published episodes flushed", index, stop.code)
        messages.send(("failed", f"stopped (exit {stop.code})"))
        bus.close()
        raise
    except BaseException as error:
        log.error("worker w%d failed: %s", index, error, exc_info=True)
        messages.send(("failed", traceback.format_exc(limit=5)))
        bus.close()
        raise SystemExit(1) from None
    finally:
        tracing.shutdown()  # a multiprocessing child runs no atexit handlers


# ------------------------------------------------------------------------------- the whole run

def train(config: TrainConfig, bus: Bus | None = None,
          progress: Callable[[RunProgress], None] | None = None) -> TrainSummary:
    """Run `config`; see the module docstring. Never raises for a failed worker: check
    `summary.failed_workers` (the CLI exits non-zero on them)."""
    config.validate()
    token = secrets.token_hex(3)
    settings = settings_module.load()
    run_dir = Path(config.run_dir or Path(settings.run_dir) / "train" / f"{config.experiment}-{token}")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    tracker = tracking.open_tracker(config, token)
    config = dataclasses.replace(config, mlflow=tracker.uri if tracker else tracking.OFF)
    on_iteration = tracker.iteration if tracker else None
    totals = WorkerStats()
    results: dict[int, dict] = {}
    failed: list[str] = []
    started = time.perf_counter()

    def on_batch(index: int, batch_totals: dict) -> None:
        totals.merge(WorkerStats(**batch_totals))
        if progress is not None:
            progress(RunProgress(
                totals.episodes, config.episodes,
                totals.successes / totals.episodes if totals.episodes else 0.0,
                totals.energy_success_j / totals.successes if totals.successes else math.nan,
                totals.energy_success_j / totals.bits_success if totals.bits_success else math.nan,
            ))

    if bus is not None or parse_bus_url(config.bus_url)[0] == "memory":
        in_process_bus = bus or open_bus(config.bus_url)
        for index in range(config.workers):
            try:
                results[index] = run_worker(
                    config, index, token, in_process_bus,
                    lambda i, batch: on_batch(i, batch_totals(batch)), on_iteration,
                )
            except Exception:
                log.exception("worker w%d failed", index)
                failed.append(f"w{index}")
    else:
        _run_processes(config, token, results, failed, on_batch, on_iteration)

    summary = _summary(config, results, failed, totals, time.perf_counter() - started)
    if tracker is not None:
        summary.mlflow_run_id = tracker.finish(summary, results)
    return summary


@contextlib.contextmanager
def _worker_threads(workers: int):
    """While a worker process starts: its OpenMP threads are its share of the cores (unless
    OMP_NUM_THREADS is set) — workers that each wake every core wait on each other's threads."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = previous or str(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]


def _run_processes(config, token, results, failed, on_batch, on_iteration) -> None:
    """One spawned process per worker, each with its own pipe (a worker killed mid-message
    cannot block the others, as it could while holding a shared queue's lock)."""
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    workers = {}
    for index in range(config.workers):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_process, args=(config, index, token, sender),
            name=f"stgym-train-w{index}",
        )
        with _worker_threads(config.workers):
            process.start()
        sender.close()
        workers[receiver] = (index, process)

    def stop_workers(signum, frame):
        for _, process in workers.values():
            if process.is_alive():
                process.terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop_workers)
    try:
        pending = dict(workers)
        while pending:
            for receiver in wait(list(pending)):
                index, process = pending[receiver]
                try:
                    kind, payload = receiver.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    process.join()
                    if index not in results and f"w{index}" not in failed:
                        failed.append(f"w{index}")
                        log.error("worker w%d died (exit code %s)", index, process.exitcode)
                    del pending[receiver]
                    continue
                if kind == "batch":
                    on_batch(index, payload)
                elif kind == "iteration":
                    on_iteration(index, *payload)
                elif kind == "done":
                    results[index] = payload
                else:
                    failed.append(f"w{index}")
                    log.error("worker w%d failed:\n%s", index, payload)
    except KeyboardInterrupt:
        for _, process in workers.values():
            process.terminate()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        for receiver, (_, process) in workers.items():
            process.join(timeout=30)
            receiver.close()


def _summary(config: TrainConfig, results: dict, failed: list, live_totals: WorkerStats,
             wall_s: float) -> TrainSummary:
    totals = live_totals
    numbers = summarise(totals)
    policy_path, policy_metrics = None, {}
    if results:
        best = max(results.values(), key=lambda r: r["objective"])
        policy_metrics = {
            "training_episodes": totals.episodes,
            "training_success_rate": numbers["success_rate"],
            "objective": best["objective"],
            "run_id": best["run_id"],
            **best["extra"],
        }
        if best["pulse"] is None:  # an SB3 agent: its saved model is the policy
            policy_path = best["extra"]["model_path"]
        else:
            policy_path = config.policy_out or str(Path(config.run_dir) / "policy.json")
            PulsePolicy(
                amplitudes=np.asarray(best["pulse"]), env_id=config.env_id,
                env_kwargs=config.env_kwargs, algorithm=config.algorithm,
                metrics=policy_metrics, stop_alignment=best["stop"],
            ).save(policy_path)
    return TrainSummary(
        experiment=config.experiment, algorithm=config.algorithm, env_id=config.env_id,
        wall_time_s=wall_s, run_ids=sorted(r["run_id"] for r in results.values()),
        failed_workers=sorted(failed), run_dir=str(config.run_dir), policy_path=policy_path,
        policy_metrics=policy_metrics, **numbers,
    )
