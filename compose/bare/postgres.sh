#!/usr/bin/env bash
# PostgreSQL (Debian package): a private cluster under $STGYM_RUN_DIR/postgres, owned by the
# system user `postgres`, listening on $STGYM_HOST:$STGYM_POSTGRES_PORT only; TCP clients of
# that host's subnet log in with scram-sha-256. The application role may create databases
# (tests make one per test); its password and the reader role's are the generated files
# secrets_dir/postgres.password and postgres-reader.password, set again when a file changes.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_USER=postgres

pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$dir" ]] || die "postgres: no /usr/lib/postgresql/*/bin (package postgresql not installed?)"
    echo "$dir/$1"
}

# Resolved: $RUN_DIR/postgres may be a link to a directory the postgres user can reach.
pg_sock_dir() { echo "$(readlink -f "$RUN_DIR/postgres")/socket"; }

# psql as the cluster superuser over the private Unix socket (trust, socket is mode 0700).
pg_super_psql() {
    as_user "$PG_USER" "$(pg_bin psql)" -X -q -v ON_ERROR_STOP=1 -h "$(pg_sock_dir)" \
        -p "$STGYM_POSTGRES_PORT" -U postgres -d postgres "$@"
}

svc_postgres_port() { echo "$STGYM_POSTGRES_PORT"; }

# pg_stat_statements: per-statement execution times, exported by postgres-exporter
# (compose/prometheus/postgres-exporter-queries.yaml) as the database query time KPI.
pg_restart_settings() {
    printf '%s\n' "# written by compose/bare/postgres.sh; changing it restarts the cluster" \
        "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = top"
}
svc_postgres_fingerprint() { pg_restart_settings; }

svc_postgres_install() {
    apt_install postgresql
    ensure_system_user "$PG_USER"
}

svc_postgres_start() {
    local base data
    base="$(owned_dir "$PG_USER" postgres)"
    data="$base/data"
    mkdir -p "$base/socket"
    chown "$PG_USER:$PG_USER" "$base/socket" 2>/dev/null || true
    chmod 700 "$base/socket"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        local t0; t0=$(now)
        rm -rf "$data"
        local pwfile="$base/.pw"
        printf '%s\n' "postgres-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" > "$pwfile"
        chown "$PG_USER:$PG_USER" "$pwfile" 2>/dev/null || true
        as_user "$PG_USER" "$(pg_bin initdb)" -D "$data" -U postgres --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
            >> "$(log_file postgres)" 2>&1 || die "postgres: initdb failed; log: $(log_file postgres)"
        rm -f "$pwfile"
        cat >> "$data/postgresql.conf" <<EOF
# --- spin-torque-gym (compose/bare/postgres.sh)
listen_addresses = '$HOST'
port = $STGYM_POSTGRES_PORT
unix_socket_directories = '$base/socket'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
fsync = on
logging_collector = off
log_min_messages = warning
EOF
        timing "postgres initdb" "$t0"
        touch "$base/.needs-bootstrap"
    fi
    # Settings that only a (re)start applies, kept in their own file: svc_start restarts a
    # running cluster whose file differs (fingerprint), and a new cluster starts with it.
    pg_restart_settings > "$data/stgym-restart.conf"
    chown "$PG_USER:$PG_USER" "$data/stgym-restart.conf" 2>/dev/null || true
    grep -qxF "include_if_exists = 'stgym-restart.conf'" "$data/postgresql.conf" \
        || echo "include_if_exists = 'stgym-restart.conf'" >> "$data/postgresql.conf"
    # Other machines of the listen address's subnet (README: several machines), scram only.
    grep -q '^host all all samenet scram-sha-256' "$data/pg_hba.conf" \
        || echo 'host all all samenet scram-sha-256' >> "$data/pg_hba.conf"
    as_user_prefix "$PG_USER"
    spawn postgres "$data" "${AS_USER[@]}" "$(pg_bin postgres)" -D "$data"
}

svc_postgres_bootstrap() {
    local base="$RUN_DIR/postgres"
    [[ -f "$base/.needs-bootstrap" ]] || return 0
    local user="$STGYM_POSTGRES_USER" db="$STGYM_POSTGRES_DB"
    { echo "\\set pass '$(secret postgres.password)'"; cat <<'SQL'; } \
        | pg_super_psql -v user="$user" -v db="$db" >> "$(log_file postgres)" 2>&1 \
        || die "postgres: creating role/database failed; log: $(log_file postgres)"
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'pass')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('GRANT pg_monitor TO %I', :'user') \gexec
-- Tests drop their databases WITH (FORCE): that may have to end sessions of other roles.
SELECT format('GRANT pg_signal_backend TO %I', :'user') \gexec
SQL
    rm -f "$base/.needs-bootstrap"
}

# The read-only role of `stgym serve` and the pg_stat_statements extension (idempotent, every
# `up`: clusters made before them get them too). pg_read_all_data reads every table of every
# database (tests make their own), and the role's sessions default to read-only transactions.
after_ready_postgres() {
    { echo "\\set pass '$(secret postgres-reader.password)'"; cat <<'SQL'; } \
        | pg_super_psql -v user="$STGYM_POSTGRES_READER_USER" >> "$(log_file postgres)" 2>&1 || die "postgres: creating the read-only role failed; log: $(log_file postgres)"
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'pass')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('GRANT pg_read_all_data TO %I', :'user') \gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'user') \gexec
SQL
    pg_super_psql -d "$STGYM_POSTGRES_DB" -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' \
        >> "$(log_file postgres)" 2>&1 || die "postgres: CREATE EXTENSION pg_stat_statements failed; log: $(log_file postgres)"
    pg_dead_client_settings
}

# A client machine that dies (powered off, its link down) sends no FIN: its session would stay
# open for hours (the kernel's 2 h keepalive), a transaction of it holding its row locks, and
# every other writer of the same rows (kpi_cumulative) would wait for it. TCP keepalives, a
# user timeout and a connection check end such a session — and roll its transaction back —
# within about 25 s. Reloadable (no restart), set again on every `up`.
pg_dead_client_settings() {
    pg_super_psql >> "$(log_file postgres)" 2>&1 <<'SQL' || die "postgres: setting the dead-client timeouts failed; log: $(log_file postgres)"
ALTER SYSTEM SET tcp_keepalives_idle = 10;
ALTER SYSTEM SET tcp_keepalives_interval = 5;
ALTER SYSTEM SET tcp_keepalives_count = 3;
ALTER SYSTEM SET tcp_user_timeout = '25s';
ALTER SYSTEM SET client_connection_check_interval = '10s';
SELECT pg_reload_conf();
SQL
}

# The roles' passwords follow their files: set again (hashed by the server as scram-sha-256)
# when a file is new or changed, e.g. on a cluster created before the files existed.
pg_apply_passwords() {
    local marker="$RUN_DIR/postgres/.passwords-applied" digest
    digest="$(secret postgres.password | sha256sum; secret postgres-reader.password | sha256sum)"
    [[ -f "$marker" && "$(cat "$marker")" == "$digest" ]] && return 0
    { echo "\\set pass '$(secret postgres.password)'"
      echo "\\set reader_pass '$(secret postgres-reader.password)'"
      cat <<'SQL'; } | pg_super_psql -v user="$STGYM_POSTGRES_USER" \
        -v reader="$STGYM_POSTGRES_READER_USER" >> "$(log_file postgres)" 2>&1 || return 1
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'pass')
WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'reader', :'reader_pass')
WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') \gexec
SQL
    echo "$digest" > "$marker"
}

svc_postgres_ready() {
    # The superuser socket answers first; then the role/database are created once and the
    # passwords set from their files; the real check is the application's own login over TCP.
    pg_super_psql -c 'SELECT 1' >/dev/null 2>&1 || return 1
    svc_postgres_bootstrap
    pg_apply_passwords
    $CHECK postgres
}

svc_postgres_stop() {
    # SIGINT = PostgreSQL's "fast" shutdown (rolls back sessions, checkpoints, exits).
    stop_pid postgres INT
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main postgres "$@"; fi
