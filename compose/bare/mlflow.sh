#!/usr/bin/env bash
# MLflow tracking server (PyPI): mlflow in a venv of its own under ~/.cache/stgym (the server's
# heavy dependencies stay out of the project's venv; pins in compose/mlflow/server-constraints.txt),
# backend store the database $STGYM_MLFLOW_DB of the PostgreSQL cluster (postgres.sh; created
# here as the application role), artifacts under $STGYM_RUN_DIR/mlflow-artifacts served by the
# server itself (--artifacts-destination), one uvicorn worker, $STGYM_HOST:$STGYM_MLFLOW_PORT.
# Basic auth always on (MLflow's basic-auth app, the mlflow[auth] extra): its admin is
# settings.mlflow_username with the generated password of mlflow.password, created when the
# user store ($RUN_DIR/mlflow/basic_auth.db) is empty; every other request than /health needs
# them. On loopback too: another user of this machine could otherwise register a model, and a
# registered pyfunc model is code that `stgym evaluate models:/...` runs.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MLFLOW_VERSION=3.17.2
MLFLOW_CONSTRAINTS="$REPO_ROOT/compose/mlflow/server-constraints.txt"
MLFLOW_SPEC="mlflow[auth]==$MLFLOW_VERSION"
MLFLOW_VENV="$CACHE_DIR/mlflow-$MLFLOW_VERSION"
MLFLOW_AUTH_DIR="$RUN_DIR/mlflow"

svc_mlflow_port() { echo "$STGYM_MLFLOW_PORT"; }

# .installed names what was installed: a venv of an earlier spec gets what is missing.
svc_mlflow_install() {
    [[ "$(cat "$MLFLOW_VENV/.installed" 2>/dev/null)" == "$MLFLOW_SPEC" ]] && return 0
    log "mlflow: installing $MLFLOW_SPEC into $MLFLOW_VENV (log: $(log_file mlflow-install))"
    if [[ ! -x "$MLFLOW_VENV/bin/pip" ]]; then
        rm -rf "$MLFLOW_VENV"
        "$PY" -m venv "$MLFLOW_VENV" || die "mlflow: creating the venv $MLFLOW_VENV failed"
    fi
    PIP_CACHE_DIR="$CACHE_DIR/pip" "$MLFLOW_VENV/bin/pip" install -q -c "$MLFLOW_CONSTRAINTS" \
        "$MLFLOW_SPEC" psycopg2-binary > "$(log_file mlflow-install)" 2>&1 \
        || die "mlflow: pip install failed; log: $(log_file mlflow-install)"
    echo "$MLFLOW_SPEC" > "$MLFLOW_VENV/.installed"
}

# The basic-auth app's config (MLFLOW_AUTH_CONFIG_PATH); no password in it: the admin's comes
# through MLFLOW_AUTH_ADMIN_PASSWORD. One uvicorn worker, so the credential cache (a PBKDF2
# check per request otherwise) has no other worker to be stale in.
mlflow_auth_config() {
    cat <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$MLFLOW_AUTH_DIR/basic_auth.db
admin_username = $STGYM_MLFLOW_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 300
INI
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
    mkdir -p "$MLFLOW_AUTH_DIR"
    mlflow_auth_config > "$MLFLOW_AUTH_DIR/basic_auth.ini"
    # No job runner: it forks a scheduler and seven huey consumers (trace archival, GenAI
    # jobs) that tracking and the registry do not use, on a 2-core machine. The secrets go
    # through the environment (never on a command line).
    MLFLOW_AUTH_ADMIN_PASSWORD="${STGYM_MLFLOW_PASSWORD:-$(secret mlflow.password)}" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret mlflow-server.key)" \
    MLFLOW_AUTH_CONFIG_PATH="$MLFLOW_AUTH_DIR/basic_auth.ini" \
    spawn mlflow "mlflow server" env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
        "$MLFLOW_VENV/bin/mlflow" server --app-name basic-auth \
        --backend-store-uri "$STGYM_MLFLOW_BACKEND_STORE_URI" \
        --artifacts-destination "$artifacts" \
        --host "$HOST" --port "$STGYM_MLFLOW_PORT" --workers 1
}

svc_mlflow_fingerprint() {
    echo "$MLFLOW_SPEC $STGYM_MLFLOW_BACKEND_STORE_URI $HOST basic-auth"; mlflow_auth_config
}

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
