-- 003: convergence per training run (stgym.kpi.fold_convergence), updated in the same
-- transaction as the training_progress rows it folds, so a replay cannot advance it twice.
-- Episodes to convergence are counted at query time (the run's episodes up to converged_ts,
-- by episodes_run_ts_idx), so episodes that reach the store after the training event count too.
CREATE TABLE training_convergence (
    run_id                   TEXT PRIMARY KEY,
    experiment_id            TEXT NOT NULL,
    device_type              TEXT NOT NULL,
    algorithm                TEXT NOT NULL,
    streak                   BIGINT NOT NULL,
    streak_start_iteration   BIGINT,
    streak_start_ts          DOUBLE PRECISION,
    last_iteration           BIGINT NOT NULL,
    converged_iteration      BIGINT,
    converged_ts             DOUBLE PRECISION,
    updated_at               DOUBLE PRECISION NOT NULL
);
CREATE INDEX training_convergence_key_idx ON training_convergence (experiment_id, device_type, algorithm);
CREATE INDEX episodes_run_ts_idx ON episodes (run_id, ts);
