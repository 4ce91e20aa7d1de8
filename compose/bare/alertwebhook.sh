#!/usr/bin/env bash
# The alert webhook (`stgym alerts serve`, this checkout's .venv) on $HOST:$STGYM_ALERT_WEBHOOK_PORT:
# Alertmanager's receiver, which logs every alert as a structured record (shipped to OpenSearch)
# and runs the Watchdog's dead man's switch (CRITICAL record + stgym_watchdog_missing on its
# /metrics, scraped by Prometheus as job alert-webhook). Ready = /health answers 200.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

svc_alert_webhook_port() { echo "$STGYM_ALERT_WEBHOOK_PORT"; }
svc_alert_webhook_install() {
    [[ -x "$REPO_ROOT/.venv/bin/stgym" ]] || die "alert-webhook: $REPO_ROOT/.venv/bin/stgym is missing; run \`make venv\` first"
}
svc_alert_webhook_start() {
    spawn alert-webhook "alerts serve" \
        "$REPO_ROOT/.venv/bin/stgym" --log-format json alerts serve --port "$STGYM_ALERT_WEBHOOK_PORT"
}
svc_alert_webhook_ready() { $CHECK http "http://$HOST:$STGYM_ALERT_WEBHOOK_PORT/health"; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main alert-webhook "$@"; fi
