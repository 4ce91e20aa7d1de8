"""A worker's events on the bus: episodes (then the ledger, once the broker acknowledged them),
training iterations and the experiment's status. The delivery contract is in producers.runner.
Each batch is one `publish` span; its first record carries that span's W3C trace context in
its headers (all of a batch's records share the run id, so the key and the partition: the
consumer gives the records after it the same, stgym.tracing.OpenPublishes), so the stream batch
that aggregates them links back to it."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from producers.rollout import EpisodeBatch
from producers.train_config import TrainConfig
from producers.trainers import Progress
from producers.worker_metrics import WorkerMetrics
from producers.worker_stats import WorkerStats
from stgym import events, tracing
from stgym.bus import Bus


class EpisodePublisher:
    """The trainer's Reporter: events to the bus, ledger after each acknowledged batch."""

    def __init__(self, config: TrainConfig, index: int, run_id: str, device_type: str,
                 bus: Bus, ledger: Path, metrics: WorkerMetrics,
                 on_batch: Callable[[int, EpisodeBatch], None]) -> None:
        self.config, self.index, self.bus, self.ledger = config, index, bus, ledger
        self.common = dict(
            experiment_id=config.experiment, run_id=run_id,
            worker_id=f"w{config.first_worker + index}",
            device_type=device_type, algorithm=config.algorithm,
        )
        self.metrics, self.on_batch = metrics, on_batch
        self.stats = WorkerStats()
        self.last_objective = -math.inf

    def episodes(self, batch: EpisodeBatch) -> None:
        with tracing.span("publish", episodes=len(batch)):
            self._publish(batch)
        self.stats.add_batch(batch)
        self.metrics.update(self.stats.sim_steps / max(self.stats.sim_wall_s, 1e-12))
        self.on_batch(self.index, batch)

    def _publish(self, batch: EpisodeBatch) -> None:
        """The batch's events, acknowledged by the broker, then their ids in the ledger."""
        ids = []
        now = events.utc_now()
        headers = tracing.headers()
        common = {name: value for name, value in self.common.items() if name != "worker_id"}
        learner = self.common["worker_id"]
        # an episode a Ray worker ran names it after the learner (producers.ray_rollouts)
        workers = ([learner] * len(batch) if batch.workers is None
                   else [f"{learner}.{worker}" for worker in batch.workers])
        for i in range(len(batch)):
            switch = batch.switching_time_s[i]
            wall = float(batch.wall_time_s[i])
            event = events.EpisodeEvent(
                event_id=events.new_event_id(), timestamp=now, **common, worker_id=workers[i],
                episode=self.stats.episodes + i, seed=int(batch.seeds[i]),
                success=bool(batch.success[i]), energy_j=float(batch.energy_j[i]),
                switching_time_s=None if math.isnan(switch) else float(switch),
                steps=int(batch.steps[i]), total_reward=float(batch.total_reward[i]),
                sim_steps=int(batch.sim_steps[i]), wall_time_s=wall,
                sim_steps_per_s=float(batch.sim_steps[i]) / wall if wall > 0 else 0.0,
            )
            self.bus.publish(event, None if i else headers)
            ids.append(event.event_id)
        self.bus.flush()
        with self.ledger.open("a") as ledger:
            ledger.write("".join(f"{event_id}\n" for event_id in ids))

    def iteration(self, progress: Progress) -> None:
        self.last_objective = progress.objective
        self.bus.publish(events.TrainingEvent(
            event_id=events.new_event_id(), timestamp=events.utc_now(), **self.common,
            iteration=progress.iteration, objective=progress.objective,
            learning_rate=progress.learning_rate, model_accuracy=progress.model_accuracy,
            validation_objective=progress.validation_objective,
        ), tracing.headers())

    def experiment(self, status: str) -> None:
        config = self.config
        self.bus.publish(events.ExperimentEvent(
            event_id=events.new_event_id(), timestamp=events.utc_now(), **self.common,
            status=status,
            config={"env_id": config.env_id, "episodes": config.episodes,
                    "workers": config.workers, "seed": config.seed,
                    "env_kwargs": json.dumps(config.env_kwargs, sort_keys=True)},
        ))
        self.bus.flush()
