#!/usr/bin/env bash
# Every real service the tests need, on a bare machine (no Docker):
#   bash compose/bare/services.sh {up|down|status|install|clean} [service...]
# Services: postgres kafka opensearch prometheus alertmanager collector postgres-exporter
# node-exporter blackbox-exporter ("exporters" names these three) jaeger mlflow. Idempotent: `up` leaves a
# running healthy service alone; `down` stops only what these scripts started (pid files under
# $STGYM_RUN_DIR/pids). Ports and paths: `python -m stgym.settings`. Prints [timing] per stage.
# api = `stgym serve` (KPI HTTP API + live dashboard, read-only role; needs the venv).
# alert-webhook = `stgym alerts serve` (Alertmanager's receiver, the Watchdog's dead man's switch).
BARE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$BARE/lib.sh"
for script in postgres kafka opensearch prometheus alertmanager alertwebhook collector exporters mlflow jaeger api ray; do
    # shellcheck disable=SC1090
    source "$BARE/$script.sh"
done

ALL=(postgres kafka opensearch prometheus alertmanager collector
     postgres-exporter node-exporter blackbox-exporter mlflow jaeger api alert-webhook)
# Started only when named (Ray across machines, README); `down` and `clean` stop them too.
OPTIONAL=(ray-head ray-worker)

# Post-start step of OpenSearch: the log index templates and daily-index pipeline of
# `stgym logs setup` (stgym/data/opensearch/*.json), before the collector writes the first record.
after_ready_opensearch() {
    local stgym="$REPO_ROOT/.venv/bin/stgym" t0; t0=$(now)
    [[ -x "$stgym" ]] && "$stgym" logs setup --help >/dev/null 2>&1 || return 0
    "$stgym" logs setup >> "$(log_file opensearch)" 2>&1 \
        || die "opensearch: 'stgym logs setup' failed; log: $(log_file opensearch)"
    timing "opensearch templates" "$t0"
}

selected() {
    local names=() n
    for n in "$@"; do
        case "$n" in
            exporters) names+=(postgres-exporter node-exporter blackbox-exporter) ;;
            *) [[ " ${ALL[*]} ${OPTIONAL[*]} " == *" $n "* ]] || die "unknown service '$n' (known: ${ALL[*]} ${OPTIONAL[*]} exporters)"
               names+=("$n") ;;
        esac
    done
    [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
    echo "${names[@]}"
}

cmd="${1:-status}"; shift || true
read -r -a NAMES <<< "$(selected "$@")"

case "$cmd" in
    install)
        for n in "${NAMES[@]}"; do svc_install "$n"; done
        ;;
    up)
        t_all=$(now)
        for n in "${NAMES[@]}"; do svc_install "$n"; done
        # Start everything first (the JVMs boot in parallel), then wait for each in turn.
        for n in "${NAMES[@]}"; do svc_start "$n"; done
        failed=()
        for n in "${NAMES[@]}"; do
            if svc_wait "$n"; then
                if declare -F "after_ready_$(fn_name "$n")" >/dev/null; then "after_ready_$(fn_name "$n")"; fi
            else
                failed+=("$n")
            fi
        done
        timing "services up" "$t_all"
        if [[ ${#failed[@]} -gt 0 ]]; then
            echo "[services] ERROR: not ready: ${failed[*]} (logs under $LOG_DIR)" >&2
            exit 1
        fi
        ;;
    down)
        [[ $# -gt 0 ]] || NAMES+=("${OPTIONAL[@]}")
        for (( i=${#NAMES[@]}-1; i>=0; i-- )); do svc_down "${NAMES[i]}"; done
        ;;
    status)
        printf '%-18s %-6s %-8s %s\n' SERVICE PORT PID STATE
        rc=0
        for n in "${NAMES[@]}"; do svc_status "$n" || rc=1; done
        exit $rc
        ;;
    clean)
        # Stop and forget all data (topics, databases, indices, TSDB); caches are kept.
        for n in "${OPTIONAL[@]}"; do svc_down "$n"; done
        for (( i=${#ALL[@]}-1; i>=0; i-- )); do svc_down "${ALL[i]}"; done
        for d in "$RUN_DIR"/*; do
            if [[ -L "$d" ]]; then  # data under /var/tmp/stgym-<hash>/ (lib.sh owned_dir)
                target="$(readlink -f "$d")"
                rm -rf "$target"
                rmdir "$(dirname "$target")" 2>/dev/null || true
            fi
            rm -rf "$d"
        done
        ;;
    *)
        die "usage: $0 {up|down|status|install|clean} [service...]"
        ;;
esac
