#!/usr/bin/env bash
# Alertmanager (Debian package): config compose/alertmanager/alertmanager.yml rendered for the
# configured webhook port (compose/bare/render.py) into $STGYM_RUN_DIR/config, clustering off,
# state under $STGYM_RUN_DIR/alertmanager.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AM_SOURCE="$REPO_ROOT/compose/alertmanager/alertmanager.yml"
AM_CONFIG="$RUN_DIR/config/alertmanager.yml"

alertmanager_render() {
    $PY "$BARE_DIR/render.py" "$AM_SOURCE" "$AM_CONFIG" >> "$(log_file alertmanager)" 2>&1 \
        || die "alertmanager: rendering $AM_SOURCE failed; log: $(log_file alertmanager)"
    amtool check-config "$AM_CONFIG" >> "$(log_file alertmanager)" 2>&1 \
        || die "alertmanager: $AM_CONFIG fails 'amtool check-config'; log: $(log_file alertmanager)"
}

svc_alertmanager_port() { echo "$STGYM_ALERTMANAGER_PORT"; }

svc_alertmanager_install() { apt_install prometheus-alertmanager; }

svc_alertmanager_start() {
    alertmanager_render
    local data="$RUN_DIR/alertmanager"
    mkdir -p "$data"
    spawn alertmanager "--storage.path=$data" prometheus-alertmanager \
        "--config.file=$AM_CONFIG" "--storage.path=$data" \
        "--web.listen-address=$HOST:$STGYM_ALERTMANAGER_PORT" \
        --cluster.listen-address=
}

svc_alertmanager_fingerprint() { $PY "$BARE_DIR/render.py" "$AM_SOURCE" /dev/stdout; }
svc_alertmanager_reload() {
    alertmanager_render
    curl -fsS -X POST "http://$HOST:$STGYM_ALERTMANAGER_PORT/-/reload" >/dev/null \
        || die "alertmanager: reload failed; log: $(log_file alertmanager)"
}

svc_alertmanager_ready() { $CHECK http "http://$HOST:$STGYM_ALERTMANAGER_PORT/-/ready"; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main alertmanager "$@"; fi
