-- 004: the objective of the current policy on held-out episodes (TrainingEvent.validation_objective),
-- next to the training objective: training vs validation.
ALTER TABLE training_progress ADD COLUMN validation_objective DOUBLE PRECISION;
ALTER TABLE kpi_cumulative ADD COLUMN validation_objective DOUBLE PRECISION;
