#!/usr/bin/env bash
# The log collector: an OpenTelemetry Collector built with the OpenTelemetry Collector Builder
# from compose/collector/builder-config.yaml (fluentforward and OTLP receivers, batch processor,
# a small OpenSearch bulk exporter, the OTLP exporter to Jaeger, health_check extension). The
# binary is cached under
# ~/.cache/stgym/otelcol-<version>-<hash of the manifest and exporter source>/.
# Runtime config: compose/collector/config.yaml (merged with worker.yaml on a worker host).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COLLECTOR_DIR="$REPO_ROOT/compose/collector"
OCB_VERSION="$(sed -n 's/^  version: *//p' "$COLLECTOR_DIR/builder-config.yaml" | head -n1)"
collector_hash() {
    cat "$COLLECTOR_DIR/builder-config.yaml" "$COLLECTOR_DIR"/opensearchexporter/go.mod \
        "$COLLECTOR_DIR"/opensearchexporter/*.go | sha256sum | cut -c1-12
}
COLLECTOR_BUILD="$CACHE_DIR/otelcol-$OCB_VERSION-$(collector_hash)"
COLLECTOR_BIN="$COLLECTOR_BUILD/stgym-otelcol"

go_cmd() {
    if command -v go >/dev/null; then command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
    else return 1
    fi
}

svc_collector_port() { echo "$STGYM_COLLECTOR_FORWARD_PORT"; }

svc_collector_install() {
    [[ -x "$COLLECTOR_BIN" ]] && return 0
    local go
    go="$(go_cmd)" || die "collector: the Go toolchain (>= 1.26) is needed to build the collector; install Go"
    export PATH="$(dirname "$go"):$PATH"
    local builder="$CACHE_DIR/bin/ocb-$OCB_VERSION"
    if [[ ! -x "$builder" ]]; then
        log "collector: installing the OpenTelemetry Collector Builder v$OCB_VERSION"
        local gobin="$CACHE_DIR/bin/tmp.$$"
        GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@v$OCB_VERSION" \
            > "$LOG_DIR/collector-build.log" 2>&1 \
            || die "collector: go install of the builder failed; log: $LOG_DIR/collector-build.log"
        mv "$gobin/builder" "$builder"
        rm -rf "$gobin"
    fi
    log "collector: building the collector (takes minutes on a cold cache; log: $LOG_DIR/collector-build.log)"
    local tmp="$COLLECTOR_BUILD.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    sed -e "s#^  output_path: .*#  output_path: $tmp#" \
        -e "s#^    path: ./opensearchexporter#    path: $COLLECTOR_DIR/opensearchexporter#" \
        "$COLLECTOR_DIR/builder-config.yaml" > "$tmp/builder-config.yaml"
    (cd "$tmp" && "$builder" --config "$tmp/builder-config.yaml") >> "$LOG_DIR/collector-build.log" 2>&1 \
        || die "collector: build failed; log: $LOG_DIR/collector-build.log"
    [[ -x "$tmp/stgym-otelcol" ]] || die "collector: build produced no binary; log: $LOG_DIR/collector-build.log"
    rm -rf "$COLLECTOR_BUILD"
    mv "$tmp" "$COLLECTOR_BUILD"
}

# This host's config files: a worker host (settings.services_host another machine) merges
# worker.yaml into config.yaml, exporting to the services host's collector (mutual TLS).
collector_configs() {
    echo "$COLLECTOR_DIR/config.yaml"
    if [[ -n "${STGYM_SERVICES_HOST:-}" && "$STGYM_SERVICES_HOST" != "$HOST" ]]; then
        echo "$COLLECTOR_DIR/worker.yaml"
    fi
}

svc_collector_start() {
    # The configs read these through ${env:...}.
    export STGYM_HOST STGYM_COLLECTOR_FORWARD_PORT STGYM_COLLECTOR_HEALTH_PORT STGYM_COLLECTOR_METRICS_PORT STGYM_LOGS_INDEX
    export STGYM_COLLECTOR_OTLP_GRPC_PORT STGYM_COLLECTOR_OTLP_HTTP_PORT STGYM_COLLECTOR_OTLP_TLS_PORT
    export STGYM_COLLECTOR_TLS_CA STGYM_COLLECTOR_TLS_SERVER_CERT STGYM_COLLECTOR_TLS_SERVER_KEY
    export STGYM_COLLECTOR_TLS_CLIENT_CERT STGYM_COLLECTOR_TLS_CLIENT_KEY STGYM_COLLECTOR_TLS_SERVER_NAME
    export STGYM_COLLECTOR_QUEUE_DIR="$RUN_DIR/collector/queue"  # the exporters' disk queue
    # Jaeger and OpenSearch listen on the services host's loopback, beside its collector; a
    # worker host's collector sends there through that collector (worker.yaml).
    export STGYM_COLLECTOR_JAEGER_ENDPOINT="${STGYM_COLLECTOR_JAEGER_ENDPOINT:-127.0.0.1:$STGYM_JAEGER_OTLP_GRPC_PORT}"
    export STGYM_COLLECTOR_OPENSEARCH_URL="${STGYM_COLLECTOR_OPENSEARCH_URL:-http://127.0.0.1:$STGYM_OPENSEARCH_PORT}"
    export STGYM_COLLECTOR_SERVICES_ENDPOINT="${STGYM_SERVICES_HOST:-$HOST}:$STGYM_COLLECTOR_OTLP_TLS_PORT"
    local configs=() config
    while read -r config; do configs+=(--config "$config"); done < <(collector_configs)
    spawn collector "$COLLECTOR_DIR/config.yaml" "$COLLECTOR_BIN" "${configs[@]}"
}

# A new config or a rebuilt binary (another hash) restarts the running collector on `up`.
svc_collector_fingerprint() { collector_configs | xargs cat; echo "$COLLECTOR_BIN"; }

svc_collector_ready() {
    $CHECK http "http://$HOST:$STGYM_COLLECTOR_HEALTH_PORT/" && $CHECK forward && $CHECK otlp
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main collector "$@"; fi
