-- kpi_windows was written on every batch and read by nothing: `stgym kpi --window`, the KPI API
-- and `stgym plot kpi` group the episodes themselves, by any window size and with exact
-- percentiles. Dropped instead of kept in step with the episodes (and their retention).
DROP TABLE IF EXISTS kpi_windows;
