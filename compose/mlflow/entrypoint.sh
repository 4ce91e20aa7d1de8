#!/usr/bin/env bash
# Create the backend store's database (once) as the application role, then run the server:
# artifacts served by it from /mlflow/artifacts, one worker, no job runner, basic auth always
# on (admin stgym with the mlflow.password secret; user store under /mlflow/auth), as
# compose/bare/mlflow.sh does.
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
mkdir -p /mlflow/auth
cat > /mlflow/auth/basic_auth.ini <<'INI'
[mlflow]
default_permission = READ
database_uri = sqlite:////mlflow/auth/basic_auth.db
admin_username = stgym
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 300
INI
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export MLFLOW_AUTH_CONFIG_PATH=/mlflow/auth/basic_auth.ini
MLFLOW_AUTH_ADMIN_PASSWORD="$(cat /run/secrets/mlflow.password)"
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat /run/secrets/mlflow-server.key)"
export MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
exec mlflow server --app-name basic-auth \
    --backend-store-uri "postgresql+psycopg2://stgym:${password}@127.0.0.1:5433/mlflow" \
    --artifacts-destination /mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1
