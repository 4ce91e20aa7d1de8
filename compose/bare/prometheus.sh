#!/usr/bin/env bash
# Prometheus (Debian package, with promtool): config compose/prometheus/prometheus.yml, TSDB
# under $STGYM_RUN_DIR/prometheus, lifecycle (POST /-/reload) and admin API enabled.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_CONFIG="$REPO_ROOT/compose/prometheus/prometheus.yml"

svc_prometheus_port() { echo "$STGYM_PROMETHEUS_PORT"; }

svc_prometheus_install() { apt_install prometheus; }

svc_prometheus_start() {
    promtool check config "$PROM_CONFIG" >> "$(log_file prometheus)" 2>&1 \
        || die "prometheus: $PROM_CONFIG fails 'promtool check config'; log: $(log_file prometheus)"
    local data="$RUN_DIR/prometheus"
    mkdir -p "$data"
    spawn prometheus "--storage.tsdb.path=$data" prometheus \
        "--config.file=$PROM_CONFIG" "--storage.tsdb.path=$data" \
        "--storage.tsdb.retention.time=7d" \
        "--web.listen-address=$HOST:$STGYM_PROMETHEUS_PORT" \
        --web.enable-lifecycle --web.enable-admin-api
}

svc_prometheus_fingerprint() { cat "$REPO_ROOT"/compose/prometheus/*.yml; }
svc_prometheus_reload() {
    promtool check config "$PROM_CONFIG" >> "$(log_file prometheus)" 2>&1 \
        || die "prometheus: $PROM_CONFIG fails 'promtool check config'; log: $(log_file prometheus)"
    curl -fsS -X POST "http://$HOST:$STGYM_PROMETHEUS_PORT/-/reload" >/dev/null \
        || die "prometheus: reload failed; log: $(log_file prometheus)"
}

svc_prometheus_ready() { $CHECK http "http://$HOST:$STGYM_PROMETHEUS_PORT/-/ready"; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main prometheus "$@"; fi
