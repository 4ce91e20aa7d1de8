#!/usr/bin/env bash
# Alertmanager (Debian package): config compose/alertmanager/alertmanager.yml, clustering off,
# state under $STGYM_RUN_DIR/alertmanager.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AM_CONFIG="$REPO_ROOT/compose/alertmanager/alertmanager.yml"

svc_alertmanager_port() { echo "$STGYM_ALERTMANAGER_PORT"; }

svc_alertmanager_install() { apt_install prometheus-alertmanager; }

svc_alertmanager_start() {
    amtool check-config "$AM_CONFIG" >> "$(log_file alertmanager)" 2>&1 \
        || die "alertmanager: $AM_CONFIG fails 'amtool check-config'; log: $(log_file alertmanager)"
    local data="$RUN_DIR/alertmanager"
    mkdir -p "$data"
    spawn alertmanager "--storage.path=$data" prometheus-alertmanager \
        "--config.file=$AM_CONFIG" "--storage.path=$data" \
        "--web.listen-address=$HOST:$STGYM_ALERTMANAGER_PORT" \
        --cluster.listen-address=
}

svc_alertmanager_fingerprint() { cat "$AM_CONFIG"; }
svc_alertmanager_reload() {
    amtool check-config "$AM_CONFIG" >> "$(log_file alertmanager)" 2>&1 \
        || die "alertmanager: $AM_CONFIG fails 'amtool check-config'; log: $(log_file alertmanager)"
    curl -fsS -X POST "http://$HOST:$STGYM_ALERTMANAGER_PORT/-/reload" >/dev/null \
        || die "alertmanager: reload failed; log: $(log_file alertmanager)"
}

svc_alertmanager_ready() { $CHECK http "http://$HOST:$STGYM_ALERTMANAGER_PORT/-/ready"; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main alertmanager "$@"; fi
