"""The sink interface and the SQL shared by the PostgreSQL and SQLite stores.

A batch of events is written in ONE transaction: episodes are inserted with
`ON CONFLICT (event_id) DO NOTHING` and only the rows that were really new are added to
kpi_cumulative and kpi_histograms in that same transaction. Replaying events
(a restarted worker, an uncommitted Kafka offset) therefore never double-counts.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import re
import time
from importlib import resources
from collections.abc import Sequence

from stgym import events as ev
from stgym import kpi

log = logging.getLogger(__name__)

COUNTER_COLUMNS = (
    "episodes_total", "successes", "energy_success_sum", "switch_time_sum",
    "switch_time_count", "sim_steps", "wall_time_s", "reward_sum",
)
KEY_COLUMNS = ("experiment_id", "device_type", "algorithm")
EPISODE_COLUMNS = (
    "event_id", "ts", "experiment_id", "run_id", "worker_id", "device_type", "algorithm",
    "episode", "seed", "success", "energy_j", "switching_time_s", "steps", "total_reward",
    "sim_steps", "wall_time_s", "sim_steps_per_s", "ingested_at",
)
GAUGE_COLUMNS = ("objective", "learning_rate", "model_accuracy", "validation_objective")
CONVERGENCE_COLUMNS = tuple(f.name for f in dataclasses.fields(kpi.Convergence))
TRAINING_COLUMNS = (
    "event_id", "ts", "experiment_id", "run_id", "worker_id", "device_type", "algorithm",
    "iteration", "objective", "learning_rate", "model_accuracy", "validation_objective",
    "ingested_at",
)


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The versioned SQL files sinks/migrations/NNN_name.sql, in order."""
    found = []
    for entry in resources.files("sinks.migrations").iterdir():
        match = re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file (no semicolons inside our statements)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class UnstorableError(Exception):
    """The database refused a transaction for a data reason (a value out of its range, a
    constraint or trigger, text it cannot hold): the same rows would fail again, so
    retrying cannot help. `message` is the database's own."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass
class WriteResult:
    new_episodes: list[ev.EpisodeEvent] = dataclasses.field(default_factory=list)
    new_trainings: int = 0
    experiments: int = 0
    duplicates: int = 0
    keys: set = dataclasses.field(default_factory=set)
    # (event, the database's message) for each event the store refused (not written)
    unstorable: list[tuple[ev.Event, str]] = dataclasses.field(default_factory=list)
    transactions: int = 1

    def merge(self, other: "WriteResult") -> "WriteResult":
        return WriteResult(
            new_episodes=self.new_episodes + other.new_episodes,
            new_trainings=self.new_trainings + other.new_trainings,
            experiments=self.experiments + other.experiments,
            duplicates=self.duplicates + other.duplicates, keys=self.keys | other.keys,
            unstorable=self.unstorable + other.unstorable,
            transactions=self.transactions + other.transactions,
        )


class Sink(abc.ABC):
    """set up / write batch / close, plus the read side used by `stgym kpi` and /metrics."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    def write_batch(self, batch: kpi.ParsedBatch) -> WriteResult:
        """Write the batch's events and their KPI deltas in one transaction (idempotent);
        events the store refuses for a data reason come back in `unstorable`, unwritten."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    outage: str | None = None  # why writes are being retried right now (None: they are not)

    def interrupt(self) -> None:
        """The process is stopping: a write or connect that is waiting to retry gives up
        soon (raising ServiceUnavailable) instead of holding the shutdown."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True if the database answers now."""


class SqlSink(Sink):
    """The SQL both databases share; subclasses provide the connection and bulk statements."""

    ph = "?"  # parameter placeholder
    conn = None

    def __init__(self, url: str, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly  # a reader (`stgym serve`): setup() neither writes nor migrates

    # -- dialect hooks -------------------------------------------------------------------
    @abc.abstractmethod
    def _write_transaction(self, batch: kpi.ParsedBatch) -> WriteResult:
        """The batch in one transaction (`_apply`), committed; raises UnstorableError (after
        rolling back) when the database refuses the data itself."""

    @abc.abstractmethod
    def _insert_new(self, cur, table: str, columns: Sequence[str], rows: list[tuple]) -> set[str]:
        """Insert rows, skipping existing event ids; return the event ids really inserted."""

    @abc.abstractmethod
    def _upsert(self, cur, table: str, columns: Sequence[str], conflict: Sequence[str],
                update_sql: str, rows: list[tuple]) -> None:
        """INSERT … ON CONFLICT (conflict) DO UPDATE SET update_sql for all rows."""

    @abc.abstractmethod
    def _switch_times(self, where: str, params: list, group_window: int | None) -> dict:
        """{(window_start or None, key...): (p50, p95, p99) of switching times} for the query."""

    def _floor_window(self, column: str, window_s: int) -> str:
        return f"(FLOOR({column} / {int(window_s)}) * {int(window_s)})"

    # -- write side ----------------------------------------------------------------------
    def write_batch(self, batch: kpi.ParsedBatch) -> WriteResult:
        """One transaction for the whole batch; when the database refuses its data, the
        batch is bisected (each half its own transaction) until the refused events stand
        alone: k bad events among n cost about 2 k log2(n) extra transactions, and all
        the other events commit."""
        try:
            return self._write_transaction(batch)
        except UnstorableError as error:
            self.outage = None  # the database answered: it refuses data, it is not out
            if len(batch) == 1:
                event = [*batch.episodes, *batch.trainings, *batch.experiments][0]
                log.warning("the database refuses event %s: %s", event.event_id, error.message)
                return WriteResult(unstorable=[(event, error.message)])
            first, second = batch.halves()
            result = self.write_batch(first).merge(self.write_batch(second))
            result.transactions += 1  # the refused attempt at the whole batch
            return result

    def _apply(self, cur, batch: kpi.ParsedBatch) -> WriteResult:
        now = time.time()
        result = WriteResult()
        episodes = sorted(batch.episodes, key=lambda e: e.event_id)
        if episodes:
            rows = [
                (e.event_id, e.timestamp.timestamp(), e.experiment_id, e.run_id, e.worker_id,
                 e.device_type, e.algorithm, e.episode, e.seed, int(e.success), e.energy_j,
                 e.switching_time_s, e.steps, e.total_reward, e.sim_steps, e.wall_time_s,
                 e.sim_steps_per_s, now)
                for e in episodes
            ]
            new_ids = self._insert_new(cur, "episodes", EPISODE_COLUMNS, rows)
            result.new_episodes = [e for e in episodes if e.event_id in new_ids]
            result.duplicates = len(episodes) - len(result.new_episodes)
        cumulative = kpi.aggregate(result.new_episodes)
        add = ", ".join(f"{c} = {{t}}.{c} + excluded.{c}" for c in COUNTER_COLUMNS)
        if cumulative:
            keys = sorted(cumulative)
            self._upsert(
                cur, "kpi_cumulative", (*KEY_COLUMNS, *COUNTER_COLUMNS, "last_event_ts", "updated_at"),
                KEY_COLUMNS,
                add.format(t="kpi_cumulative")
                + ", last_event_ts = CASE WHEN kpi_cumulative.last_event_ts IS NULL"
                " OR excluded.last_event_ts > kpi_cumulative.last_event_ts"
                " THEN excluded.last_event_ts ELSE kpi_cumulative.last_event_ts END"
                ", updated_at = excluded.updated_at",
                [(*k, *(getattr(cumulative[k], c) for c in COUNTER_COLUMNS),
                  cumulative[k].last_event_ts, now) for k in keys],
            )
            hist_rows = []
            for k in keys:
                for metric, buckets in (("energy_per_switch_joules", cumulative[k].energy_buckets),
                                        ("switching_time_seconds", cumulative[k].time_buckets)):
                    hist_rows.extend((*k, metric, b, n) for b, n in sorted(buckets.items()))
            if hist_rows:
                self._upsert(
                    cur, "kpi_histograms", (*KEY_COLUMNS, "metric", "bucket", "count"),
                    (*KEY_COLUMNS, "metric", "bucket"), "count = kpi_histograms.count + excluded.count",
                    hist_rows,
                )
            result.keys.update(keys)
        trainings = sorted(batch.trainings, key=lambda e: e.event_id)
        if trainings:
            rows = [
                (t.event_id, t.timestamp.timestamp(), t.experiment_id, t.run_id, t.worker_id,
                 t.device_type, t.algorithm, t.iteration, t.objective, t.learning_rate,
                 t.model_accuracy, t.validation_objective, now)
                for t in trainings
            ]
            new_ids = self._insert_new(cur, "training_progress", TRAINING_COLUMNS, rows)
            new = [t for t in trainings if t.event_id in new_ids]
            result.new_trainings = len(new)
            if new:
                self._fold_convergence(cur, new, now)
            counts: dict = {}
            for t in new:
                counts[kpi.key_of(t)] = counts.get(kpi.key_of(t), 0) + 1
            latest = kpi.latest_training(new)
            newer = "excluded.training_ts >= COALESCE(kpi_cumulative.training_ts, excluded.training_ts)"
            if latest:
                self._upsert(
                    cur, "kpi_cumulative",
                    (*KEY_COLUMNS, "training_iterations", "training_ts", "objective",
                     "learning_rate", "model_accuracy", "validation_objective", "updated_at"),
                    KEY_COLUMNS,
                    "training_iterations = kpi_cumulative.training_iterations + excluded.training_iterations, "
                    + ", ".join(
                        f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE kpi_cumulative.{c} END"
                        for c in ("objective", "learning_rate", "model_accuracy",
                                  "validation_objective")
                    )
                    + f", training_ts = CASE WHEN {newer} THEN excluded.training_ts"
                    " ELSE kpi_cumulative.training_ts END, updated_at = excluded.updated_at",
                    [(*k, counts[k], t.timestamp.timestamp(), t.objective, t.learning_rate,
                      t.model_accuracy, t.validation_objective, now)
                     for k, t in sorted(latest.items())],
                )
                result.keys.update(latest)
        if batch.experiments:
            self._write_experiments(cur, batch.experiments)
            result.experiments = len(batch.experiments)
        return result

    def _fold_convergence(self, cur, trainings: list[ev.TrainingEvent], now: float) -> None:
        """Advance each run's convergence state (stgym.kpi) by its new training events."""
        by_run: dict[str, list[ev.TrainingEvent]] = {}
        for t in trainings:
            by_run.setdefault(t.run_id, []).append(t)
        runs = sorted(by_run)
        cur.execute(f"SELECT run_id, {', '.join(CONVERGENCE_COLUMNS)} FROM training_convergence"
                    f" WHERE run_id IN ({', '.join([self.ph] * len(runs))})", runs)
        known = {r[0]: kpi.Convergence(*r[1:]) for r in cur.fetchall()}
        rows = []
        for run in runs:
            before = known.get(run, kpi.Convergence())
            after = kpi.fold_convergence(before, by_run[run])
            if after != before:
                rows.append((run, *kpi.key_of(by_run[run][0]),
                             *(getattr(after, c) for c in CONVERGENCE_COLUMNS), now))
        if rows:
            self._upsert(cur, "training_convergence",
                         ("run_id", *KEY_COLUMNS, *CONVERGENCE_COLUMNS, "updated_at"), ("run_id",),
                         ", ".join(f"{c} = excluded.{c}" for c in (*CONVERGENCE_COLUMNS, "updated_at")),
                         rows)

    def convergence_by_key(self, experiment: str | None = None) -> dict:
        """{key: (runs, converged runs, mean episodes to convergence or None)}: a run's episodes
        to convergence are its stored episodes up to the event of its converging iteration."""
        where, params = self._filters(experiment, None, None, prefix="c.")
        rows = self._fetch(
            "SELECT c.experiment_id, c.device_type, c.algorithm, COUNT(*),"
            " SUM(CASE WHEN c.converged_iteration IS NULL THEN 0 ELSE 1 END),"
            " AVG((SELECT COUNT(*) FROM episodes e WHERE e.run_id = c.run_id"
            " AND c.converged_ts IS NOT NULL AND e.ts <= c.converged_ts)"
            " * CASE WHEN c.converged_iteration IS NULL THEN NULL ELSE 1 END)"
            " FROM training_convergence c" + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY c.experiment_id, c.device_type, c.algorithm", params)
        return {tuple(r[:3]): (int(r[3]), int(r[4] or 0), float(r[5]) if r[5] is not None else None)
                for r in rows}

    def _write_experiments(self, cur, experiments: list[ev.ExperimentEvent]) -> None:
        latest_run: dict[str, ev.ExperimentEvent] = {}
        latest_exp: dict[str, ev.ExperimentEvent] = {}
        first_exp: dict[str, float] = {}
        for e in sorted(experiments, key=lambda e: e.timestamp):
            latest_run[e.run_id] = e
            latest_exp[e.experiment_id] = e
            first_exp.setdefault(e.experiment_id, e.timestamp.timestamp())
        newer = "excluded.updated_at >= {t}.updated_at"
        self._upsert(
            cur, "experiments",
            ("experiment_id", "device_type", "algorithm", "status", "created_at", "updated_at"),
            ("experiment_id",),
            f"status = CASE WHEN {newer.format(t='experiments')} THEN excluded.status"
            " ELSE experiments.status END,"
            " created_at = CASE WHEN excluded.created_at < experiments.created_at"
            " THEN excluded.created_at ELSE experiments.created_at END,"
            f" updated_at = CASE WHEN {newer.format(t='experiments')} THEN excluded.updated_at"
            " ELSE experiments.updated_at END",
            [(x, e.device_type, e.algorithm, e.status, first_exp[x], e.timestamp.timestamp())
             for x, e in sorted(latest_exp.items())],
        )
        rows = []
        for run_id, e in sorted(latest_run.items()):
            ts = e.timestamp.timestamp()
            rows.append((run_id, e.experiment_id, e.worker_id, e.device_type, e.algorithm,
                         e.status, json.dumps(e.config, sort_keys=True),
                         ts if e.status == "started" else None,
                         ts if e.status != "started" else None, ts))
        self._upsert(
            cur, "runs",
            ("run_id", "experiment_id", "worker_id", "device_type", "algorithm", "status",
             "config", "started_at", "ended_at", "updated_at"),
            ("run_id",),
            f"status = CASE WHEN {newer.format(t='runs')} THEN excluded.status ELSE runs.status END,"
            " config = CASE WHEN excluded.status = 'started' THEN excluded.config ELSE runs.config END,"
            " started_at = COALESCE(runs.started_at, excluded.started_at),"
            " ended_at = COALESCE(excluded.ended_at, runs.ended_at),"
            f" updated_at = CASE WHEN {newer.format(t='runs')} THEN excluded.updated_at"
            " ELSE runs.updated_at END",
            rows,
        )

    # -- read side -----------------------------------------------------------------------
    def _fetch(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def _filters(self, experiment, device_type, algorithm, prefix: str = "") -> tuple[list[str], list]:
        where, params = [], []
        for column, value in (("experiment_id", experiment), ("device_type", device_type),
                              ("algorithm", algorithm)):
            if value is not None:
                where.append(f"{prefix}{column} = {self.ph}")
                params.append(value)
        return where, params

    def query_kpis(self, experiment: str | None = None, device_type: str | None = None,
                   algorithm: str | None = None, since_s: int | None = None,
                   window_s: int | None = None, now: float | None = None,
                   percentiles: bool = True) -> list[dict]:
        """KPI rows per key (and per window when window_s is given), newest window first."""
        now = time.time() if now is None else now
        where, params = self._filters(experiment, device_type, algorithm)
        if since_s is None and window_s is None:
            columns = (*KEY_COLUMNS, *COUNTER_COLUMNS, *GAUGE_COLUMNS, "training_iterations",
                       "last_event_ts")
            sql = (f"SELECT {', '.join(columns)} FROM kpi_cumulative"
                   + (" WHERE " + " AND ".join(where) if where else "")
                   + " ORDER BY experiment_id, device_type, algorithm")
            rows = [dict(zip(columns, r)) for r in self._fetch(sql, params)]
            times = self._switch_times(" AND ".join(where), params, None) if percentiles else {}
            convergence = self.convergence_by_key(experiment)
            out = []
            for r in rows:
                key = tuple(r[c] for c in KEY_COLUMNS)
                row = dict(zip(KEY_COLUMNS, key))
                row.update(kpi.summarize({c: r[c] for c in COUNTER_COLUMNS},
                                         times.get((None, *key), (None,) * 3) if percentiles else None))
                row.update({c: r[c] for c in (*GAUGE_COLUMNS, "training_iterations", "last_event_ts")})
                runs, converged, episodes = convergence.get(key, (0, 0, None))
                row.update(training_runs=runs, runs_converged=converged,
                           episodes_to_convergence_mean=episodes)
                out.append(row)
            return out
        if since_s is not None:
            where.append(f"ts >= {self.ph}")
            params.append(now - since_s)
        clause = " AND ".join(where)
        if window_s is not None:
            wexpr = self._floor_window("ts", window_s)
            sql = (f"SELECT {wexpr} AS ws, experiment_id, device_type, algorithm,"
                   f" COUNT(*), SUM(success), SUM(CASE WHEN success = 1 THEN energy_j ELSE 0 END),"
                   f" SUM(CASE WHEN success = 1 AND switching_time_s IS NOT NULL THEN switching_time_s ELSE 0 END),"
                   f" SUM(CASE WHEN success = 1 AND switching_time_s IS NOT NULL THEN 1 ELSE 0 END),"
                   f" SUM(sim_steps), SUM(wall_time_s), SUM(total_reward)"
                   f" FROM episodes" + (f" WHERE {clause}" if clause else "")
                   + f" GROUP BY {wexpr}, experiment_id, device_type, algorithm"
                   " ORDER BY ws DESC, experiment_id, device_type, algorithm")
        else:
            sql = ("SELECT NULL AS ws, experiment_id, device_type, algorithm,"
                   " COUNT(*), SUM(success), SUM(CASE WHEN success = 1 THEN energy_j ELSE 0 END),"
                   " SUM(CASE WHEN success = 1 AND switching_time_s IS NOT NULL THEN switching_time_s ELSE 0 END),"
                   " SUM(CASE WHEN success = 1 AND switching_time_s IS NOT NULL THEN 1 ELSE 0 END),"
                   " SUM(sim_steps), SUM(wall_time_s), SUM(total_reward)"
                   " FROM episodes" + (f" WHERE {clause}" if clause else "")
                   + " GROUP BY experiment_id, device_type, algorithm"
                   " ORDER BY experiment_id, device_type, algorithm")
        rows = self._fetch(sql, params)
        times = self._switch_times(clause, params, window_s) if percentiles else {}
        out = []
        for r in rows:
            counters = dict(zip(COUNTER_COLUMNS, r[4:12]))
            row = {"experiment_id": r[1], "device_type": r[2], "algorithm": r[3]}
            if window_s is not None:
                row["window_start"] = float(r[0])
                row["window_s"] = window_s
            key = (float(r[0]) if r[0] is not None else None, *r[1:4])
            row.update(kpi.summarize(counters, times.get(key, (None,) * 3) if percentiles else None))
            out.append(row)
        return out

    def metric_snapshot(self, max_age_s: float = 86400.0, limit: int = 2000) -> dict:
        """What the KPI collector exports: kpi_cumulative rows updated recently, their
        histogram buckets, and experiment counts by status."""
        since = time.time() - max_age_s
        columns = (*KEY_COLUMNS, *COUNTER_COLUMNS, *GAUGE_COLUMNS)
        rows = [dict(zip(columns, r)) for r in self._fetch(
            f"SELECT {', '.join(columns)} FROM kpi_cumulative"
            f" WHERE updated_at >= {self.ph} ORDER BY updated_at DESC LIMIT {int(limit)}",
            [since],
        )]
        for r in rows:
            r["key"] = tuple(r.pop(c) for c in KEY_COLUMNS)
        keys = {r["key"] for r in rows}
        hist: dict = {}
        if keys:
            for r in self._fetch(
                "SELECT h.experiment_id, h.device_type, h.algorithm, h.metric, h.bucket, h.count"
                " FROM kpi_histograms h JOIN kpi_cumulative c ON c.experiment_id = h.experiment_id"
                " AND c.device_type = h.device_type AND c.algorithm = h.algorithm"
                f" WHERE c.updated_at >= {self.ph}", [since],
            ):
                if tuple(r[:3]) in keys:
                    hist.setdefault((*r[:3], r[3]), {})[int(r[4])] = int(r[5])
        statuses = dict(self._fetch("SELECT status, COUNT(*) FROM experiments GROUP BY status"))
        convergence = self.convergence_by_key()
        return {
            "kpis": rows,
            "histograms": hist,
            "experiments": {k: int(v) for k, v in statuses.items()},
            "convergence": {k: v for k, v in convergence.items() if k in keys},
        }

    def list_experiments(self) -> list[dict]:
        """Every experiment with its latest status and its episode count, newest first."""
        rows = self._fetch(
            "SELECT x.experiment_id, x.device_type, x.algorithm, x.status, x.created_at,"
            " x.updated_at, COALESCE(SUM(c.episodes_total), 0), COALESCE(SUM(c.successes), 0)"
            " FROM experiments x LEFT JOIN kpi_cumulative c ON c.experiment_id = x.experiment_id"
            " GROUP BY x.experiment_id, x.device_type, x.algorithm, x.status, x.created_at,"
            " x.updated_at ORDER BY x.updated_at DESC, x.experiment_id")
        names = ("experiment_id", "device_type", "algorithm", "status", "created_at",
                 "updated_at", "episodes_total", "successes")
        return [{**dict(zip(names, r)), "episodes_total": int(r[6]), "successes": int(r[7])}
                for r in rows]

    def query_episodes(self, experiment: str, limit: int = 100,
                       after: tuple[float, str] | None = None) -> list[dict]:
        """Episodes of an experiment in (ts, event_id) order, the first `limit` after the
        keyset cursor `after` = (ts, event_id) of the last row of the previous page."""
        where, params = [f"experiment_id = {self.ph}"], [experiment]
        if after is not None:
            ph = self.ph
            where.append(f"(ts > {ph} OR (ts = {ph} AND event_id > {ph}))")
            params += [after[0], after[0], after[1]]
        columns = [c for c in EPISODE_COLUMNS if c != "ingested_at"]
        rows = self._fetch(
            f"SELECT {', '.join(columns)} FROM episodes WHERE {' AND '.join(where)}"
            f" ORDER BY ts, event_id LIMIT {int(limit)}", params)
        return [{**dict(zip(columns, r)), "success": bool(r[columns.index("success")])}
                for r in rows]

    def migration_versions(self) -> list[int]:
        return [int(r[0]) for r in self._fetch("SELECT version FROM schema_migrations ORDER BY version")]
