#!/usr/bin/env bash
# Prometheus (Debian package, with promtool): config compose/prometheus/prometheus.yml rendered
# for the configured ports (compose/bare/render.py) into $STGYM_RUN_DIR/config, TSDB under
# $STGYM_RUN_DIR/prometheus, retention from settings (prometheus_retention_time/_size),
# lifecycle (POST /-/reload) enabled; the admin API (TSDB snapshots of `stgym backup create`)
# only with STGYM_PROMETHEUS_ADMIN_API=on.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_SOURCE="$REPO_ROOT/compose/prometheus/prometheus.yml"
PROM_CONFIG="$RUN_DIR/config/prometheus.yml"

prometheus_render() {
    $PY "$BARE_DIR/render.py" "$PROM_SOURCE" "$PROM_CONFIG" >> "$(log_file prometheus)" 2>&1 \
        || die "prometheus: rendering $PROM_SOURCE failed; log: $(log_file prometheus)"
    promtool check config "$PROM_CONFIG" >> "$(log_file prometheus)" 2>&1 \
        || die "prometheus: $PROM_CONFIG fails 'promtool check config'; log: $(log_file prometheus)"
}

# The command-line flags from settings; a change restarts a running Prometheus on `up`.
prometheus_flags() {
    echo "--web.listen-address=$HOST:$STGYM_PROMETHEUS_PORT"
    echo --web.enable-lifecycle
    echo "--storage.tsdb.retention.time=$STGYM_PROMETHEUS_RETENTION_TIME"
    echo "--storage.tsdb.retention.size=$STGYM_PROMETHEUS_RETENTION_SIZE"
    [[ "$STGYM_PROMETHEUS_ADMIN_API" == on ]] && echo --web.enable-admin-api
    return 0
}

svc_prometheus_port() { echo "$STGYM_PROMETHEUS_PORT"; }

svc_prometheus_install() { apt_install prometheus; }

svc_prometheus_start() {
    prometheus_render
    local data="$RUN_DIR/prometheus" flags
    mkdir -p "$data"
    mapfile -t flags < <(prometheus_flags)
    spawn prometheus "--storage.tsdb.path=$data" prometheus \
        "--config.file=$PROM_CONFIG" "--storage.tsdb.path=$data" "${flags[@]}"
    prometheus_flags > "$PID_DIR/prometheus.flags"
}

svc_prometheus_fingerprint() {
    $PY "$BARE_DIR/render.py" "$PROM_SOURCE" /dev/stdout; cat "$REPO_ROOT"/compose/prometheus/*.yml
    prometheus_flags
}
# New config or rule files are reloaded; new flags need a restart.
svc_prometheus_reload() {
    if [[ "$(prometheus_flags)" != "$(cat "$PID_DIR/prometheus.flags" 2>/dev/null)" ]]; then
        log "prometheus: flags changed, restarting"
        svc_down prometheus
        svc_prometheus_start
        return
    fi
    prometheus_render
    curl -fsS -X POST "http://$HOST:$STGYM_PROMETHEUS_PORT/-/reload" >/dev/null \
        || die "prometheus: reload failed; log: $(log_file prometheus)"
}

svc_prometheus_ready() { $CHECK http "http://$HOST:$STGYM_PROMETHEUS_PORT/-/ready"; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main prometheus "$@"; fi
