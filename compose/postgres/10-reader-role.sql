-- Docker deployment: the read-only role of `stgym serve` and pg_stat_statements (database
-- query time; compose/bare/postgres.sh does the same on a bare machine). Run once by the
-- postgres image on an empty data directory.
CREATE ROLE stgym_reader LOGIN PASSWORD 'stgym_reader';
GRANT pg_read_all_data TO stgym_reader;
ALTER ROLE stgym_reader SET default_transaction_read_only = on;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
