#!/bin/sh
# Docker deployment: the read-only role of `stgym serve` (password: the postgres-reader.password
# secret) and pg_stat_statements (database query time; compose/bare/postgres.sh does the same
# on a bare machine). Run once by the postgres image on an empty data directory.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
    -v pass="$(cat /run/secrets/postgres-reader.password)" <<'SQL'
SELECT format('CREATE ROLE stgym_reader LOGIN PASSWORD %L', :'pass') \gexec
GRANT pg_read_all_data TO stgym_reader;
ALTER ROLE stgym_reader SET default_transaction_read_only = on;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
