#!/usr/bin/env bash
# MLflow tracking server (PyPI): mlflow in a venv of its own under ~/.cache/stgym (the server's
# heavy dependencies stay out of the project's venv; pins in compose/mlflow/server-constraints.txt),
# backend store the database $STGYM_MLFLOW_DB of the PostgreSQL cluster (postgres.sh; created
# here as the application role), artifacts under $STGYM_RUN_DIR/mlflow-artifacts served by the
# server itself (--artifacts-destination), one uvicorn worker, 127.0.0.1:$STGYM_MLFLOW_PORT.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MLFLOW_VERSION=3.17.2
MLFLOW_CONSTRAINTS="$REPO_ROOT/compose/mlflow/server-constraints.txt"
MLFLOW_VENV="$CACHE_DIR/mlflow-$MLFLOW_VERSION"

svc_mlflow_port() { echo "$STGYM_MLFLOW_PORT"; }

svc_mlflow_install() {
    [[ -f "$MLFLOW_VENV/.installed" ]] && return 0
    log "mlflow: installing mlflow $MLFLOW_VERSION into $MLFLOW_VENV (log: $(log_file mlflow-install))"
    rm -rf "$MLFLOW_VENV"
    "$PY" -m venv "$MLFLOW_VENV" || die "mlflow: creating the venv $MLFLOW_VENV failed"
    PIP_CACHE_DIR="$CACHE_DIR/pip" "$MLFLOW_VENV/bin/pip" install -q -c "$MLFLOW_CONSTRAINTS" \
        "mlflow==$MLFLOW_VERSION" psycopg2-binary > "$(log_file mlflow-install)" 2>&1 \
        || die "mlflow: pip install failed; log: $(log_file mlflow-install)"
    touch "$MLFLOW_VENV/.installed"
}

# The backend store's database, owned by the application role (which may CREATE DATABASE).
mlflow_create_database() {
    "$PY" - <<'PY' >> "$(log_file mlflow)" 2>&1 || die "mlflow: creating database $STGYM_MLFLOW_DB failed (is postgres up?); log: $(log_file mlflow)"
import psycopg2
from psycopg2 import sql
from stgym import settings
s = settings.load()
conn = psycopg2.connect(s.postgres_url, connect_timeout=10)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.mlflow_db,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.mlflow_db)))
        print(f"created database {s.mlflow_db}")
conn.close()
PY
}

svc_mlflow_start() {
    # The backend store needs the application role, which a new cluster gets only once it is
    # ready (svc_postgres_ready bootstraps it): wait for that before creating the database.
    # Only a cluster these scripts run in this RUN_DIR (a private MLflow may use the shared one).
    if declare -F svc_postgres_ready >/dev/null && [[ -f "$(pid_file postgres)" ]]; then
        svc_wait postgres || die "mlflow: PostgreSQL is not ready; log: $(log_file postgres)"
    fi
    mlflow_create_database
    local artifacts="$RUN_DIR/mlflow-artifacts"
    mkdir -p "$artifacts"
    # No job runner: it forks a scheduler and seven huey consumers (trace archival, GenAI
    # jobs) that tracking and the registry do not use, on a 2-core machine.
    spawn mlflow "mlflow server" env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
        "$MLFLOW_VENV/bin/mlflow" server \
        --backend-store-uri "$STGYM_MLFLOW_BACKEND_STORE_URI" \
        --artifacts-destination "$artifacts" \
        --host "$HOST" --port "$STGYM_MLFLOW_PORT" --workers 1
}

svc_mlflow_fingerprint() { echo "$MLFLOW_VERSION $STGYM_MLFLOW_BACKEND_STORE_URI $HOST"; }

svc_mlflow_ready() { $CHECK mlflow; }

# uvicorn's worker is a child of the server: stop the whole process group (spawn's setsid made
# the server its leader), then anything of the group still there after the leader went.
svc_mlflow_stop() {
    local pid=""
    if pid="$(live_pid mlflow)"; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    stop_pid mlflow TERM
    if [[ -n "$pid" ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main mlflow "$@"; fi
