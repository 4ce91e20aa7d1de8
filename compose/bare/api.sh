#!/usr/bin/env bash
# The KPI HTTP API and live dashboard (`stgym serve`, this checkout's .venv), on
# $HOST:$STGYM_API_PORT, reading PostgreSQL through the read-only role that postgres.sh creates.
# Needs the venv (`make venv`) and a running postgres; ready = /ready answers 200 (database up).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

svc_api_port() { echo "$STGYM_API_PORT"; }
# chromium: the headless browser of the dashboard's tests (tests/streams/test_kpi_api.py).
svc_api_install() {
    apt_install chromium
    [[ -x "$REPO_ROOT/.venv/bin/stgym" ]] || die "api: $REPO_ROOT/.venv/bin/stgym is missing; run \`make venv\` first"
}
svc_api_start() {
    spawn api "--port $STGYM_API_PORT" \
        "$REPO_ROOT/.venv/bin/stgym" --log-format json serve --db "$STGYM_POSTGRES_READER_URL" \
        --port "$STGYM_API_PORT"
}
svc_api_ready() {
    $CHECK http "http://$HOST:$STGYM_API_PORT/ready" '"database": true'
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main api "$@"; fi
