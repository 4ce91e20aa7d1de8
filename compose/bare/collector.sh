#!/usr/bin/env bash
# The log collector: an OpenTelemetry Collector built with the OpenTelemetry Collector Builder
# from compose/collector/builder-config.yaml (fluentforward and OTLP receivers, batch processor,
# a small OpenSearch bulk exporter, the OTLP exporter to Jaeger, health_check extension). The
# binary is cached under
# ~/.cache/stgym/otelcol-<version>-<hash of the manifest and exporter source>/.
# Runtime config: compose/collector/config.yaml.
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

svc_collector_start() {
    # The config reads these through ${env:...}.
    export STGYM_HOST STGYM_COLLECTOR_FORWARD_PORT STGYM_COLLECTOR_HEALTH_PORT STGYM_COLLECTOR_METRICS_PORT STGYM_LOGS_INDEX
    export STGYM_COLLECTOR_OTLP_GRPC_PORT STGYM_COLLECTOR_OTLP_HTTP_PORT
    export STGYM_COLLECTOR_QUEUE_DIR="$RUN_DIR/collector/queue"  # the log exporter's disk queue
    # Jaeger and OpenSearch run on the services host (settings.services_host, "" = this one).
    local services="${STGYM_SERVICES_HOST:-$HOST}"
    export STGYM_COLLECTOR_JAEGER_ENDPOINT="${STGYM_COLLECTOR_JAEGER_ENDPOINT:-$services:$STGYM_JAEGER_OTLP_GRPC_PORT}"
    export STGYM_COLLECTOR_OPENSEARCH_URL="${STGYM_COLLECTOR_OPENSEARCH_URL:-http://$services:$STGYM_OPENSEARCH_PORT}"
    spawn collector "$COLLECTOR_DIR/config.yaml" "$COLLECTOR_BIN" --config "$COLLECTOR_DIR/config.yaml"
}

# A new config or a rebuilt binary (another hash) restarts the running collector on `up`.
svc_collector_fingerprint() { cat "$COLLECTOR_DIR/config.yaml"; echo "$COLLECTOR_BIN"; }

svc_collector_ready() {
    $CHECK http "http://$HOST:$STGYM_COLLECTOR_HEALTH_PORT/" && $CHECK forward && $CHECK otlp
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main collector "$@"; fi
