-- 001: the KPI store. Portable SQL (PostgreSQL 15 and SQLite >= 3.35).
-- Times are event times in seconds since the Unix epoch (DOUBLE PRECISION), so tumbling
-- windows are plain arithmetic in both databases; booleans are 0/1 integers.

CREATE TABLE experiments (
    experiment_id   TEXT PRIMARY KEY,
    device_type     TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL
);

CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    experiment_id   TEXT NOT NULL,
    worker_id       TEXT NOT NULL,
    device_type     TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    status          TEXT NOT NULL,
    config          TEXT NOT NULL,
    started_at      DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
    updated_at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX runs_experiment_idx ON runs (experiment_id);

-- One row per episode; the event id makes every replay idempotent.
CREATE TABLE episodes (
    event_id          TEXT PRIMARY KEY,
    ts                DOUBLE PRECISION NOT NULL,
    experiment_id     TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    worker_id         TEXT NOT NULL,
    device_type       TEXT NOT NULL,
    algorithm         TEXT NOT NULL,
    episode           BIGINT NOT NULL,
    seed              BIGINT NOT NULL,
    success           INTEGER NOT NULL,
    energy_j          DOUBLE PRECISION NOT NULL,
    switching_time_s  DOUBLE PRECISION,
    steps             BIGINT NOT NULL,
    total_reward      DOUBLE PRECISION NOT NULL,
    sim_steps         BIGINT NOT NULL,
    wall_time_s       DOUBLE PRECISION NOT NULL,
    sim_steps_per_s   DOUBLE PRECISION NOT NULL,
    ingested_at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX episodes_key_ts_idx ON episodes (experiment_id, device_type, algorithm, ts);
CREATE INDEX episodes_ts_idx ON episodes (ts);

-- Running totals per (experiment, device type, algorithm), updated in the same transaction
-- as the episode rows they count; the latest training progress rides along.
CREATE TABLE kpi_cumulative (
    experiment_id       TEXT NOT NULL,
    device_type         TEXT NOT NULL,
    algorithm           TEXT NOT NULL,
    episodes_total      BIGINT NOT NULL DEFAULT 0,
    successes           BIGINT NOT NULL DEFAULT 0,
    energy_success_sum  DOUBLE PRECISION NOT NULL DEFAULT 0,
    switch_time_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
    switch_time_count   BIGINT NOT NULL DEFAULT 0,
    sim_steps           BIGINT NOT NULL DEFAULT 0,
    wall_time_s         DOUBLE PRECISION NOT NULL DEFAULT 0,
    reward_sum          DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_event_ts       DOUBLE PRECISION,
    training_iterations BIGINT NOT NULL DEFAULT 0,
    training_ts         DOUBLE PRECISION,
    objective           DOUBLE PRECISION,
    learning_rate       DOUBLE PRECISION,
    model_accuracy      DOUBLE PRECISION,
    updated_at          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (experiment_id, device_type, algorithm)
);
CREATE INDEX kpi_cumulative_updated_idx ON kpi_cumulative (updated_at);

-- The same counters per tumbling event-time window of window_s seconds.
CREATE TABLE kpi_windows (
    window_s            INTEGER NOT NULL,
    window_start        DOUBLE PRECISION NOT NULL,
    experiment_id       TEXT NOT NULL,
    device_type         TEXT NOT NULL,
    algorithm           TEXT NOT NULL,
    episodes_total      BIGINT NOT NULL DEFAULT 0,
    successes           BIGINT NOT NULL DEFAULT 0,
    energy_success_sum  DOUBLE PRECISION NOT NULL DEFAULT 0,
    switch_time_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
    switch_time_count   BIGINT NOT NULL DEFAULT 0,
    sim_steps           BIGINT NOT NULL DEFAULT 0,
    wall_time_s         DOUBLE PRECISION NOT NULL DEFAULT 0,
    reward_sum          DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (window_s, window_start, experiment_id, device_type, algorithm)
);
CREATE INDEX kpi_windows_key_idx ON kpi_windows (experiment_id, device_type, algorithm, window_start);

-- Prometheus histogram buckets (non-cumulative counts per bucket index of streams.kpi).
CREATE TABLE kpi_histograms (
    experiment_id   TEXT NOT NULL,
    device_type     TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    metric          TEXT NOT NULL,
    bucket          INTEGER NOT NULL,
    count           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, device_type, algorithm, metric, bucket)
);

CREATE TABLE training_progress (
    event_id        TEXT PRIMARY KEY,
    ts              DOUBLE PRECISION NOT NULL,
    experiment_id   TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    worker_id       TEXT NOT NULL,
    device_type     TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    iteration       BIGINT NOT NULL,
    objective       DOUBLE PRECISION NOT NULL,
    learning_rate   DOUBLE PRECISION NOT NULL,
    model_accuracy  DOUBLE PRECISION NOT NULL,
    ingested_at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX training_progress_key_idx ON training_progress (experiment_id, device_type, algorithm, ts);
