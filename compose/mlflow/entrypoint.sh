#!/usr/bin/env bash
# Create the backend store's database (once) as the application role, then run the server:
# artifacts served by it from /mlflow/artifacts, one worker, no job runner.
set -euo pipefail
password="$(cat /run/secrets/postgres.password)"
export PGPASSWORD="$password"
python - <<'PY'
import os
import psycopg2
from psycopg2 import sql
conn = psycopg2.connect(host="127.0.0.1", port=5433, user="stgym", dbname="stgym",
                        password=os.environ["PGPASSWORD"], connect_timeout=10)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("mlflow")))
conn.close()
PY
unset PGPASSWORD
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server \
    --backend-store-uri "postgresql+psycopg2://stgym:${password}@127.0.0.1:5433/mlflow" \
    --artifacts-destination /mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1
