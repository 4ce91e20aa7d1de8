#!/usr/bin/env bash
# Jaeger v2 (trace storage and query UI): github.com/jaegertracing/jaeger cmd/jaeger from the Go
# module proxy, built once and cached under ~/.cache/stgym/jaeger-<version>/. Traces are stored
# in the shared OpenSearch (indices jaeger-span-*, jaeger-service-*), so they survive a restart.
# It receives OTLP from the log collector (compose/collector/config.yaml, traces pipeline) on
# 127.0.0.1:$STGYM_JAEGER_OTLP_GRPC_PORT (OTLP/HTTP on $STGYM_JAEGER_OTLP_HTTP_PORT); query API and UI on 127.0.0.1:$STGYM_JAEGER_QUERY_PORT.
# Runtime config: compose/jaeger/config.yaml.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAEGER_VERSION=1.76.0
JAEGER_BUILD="$CACHE_DIR/jaeger-$JAEGER_VERSION"
JAEGER_BIN="$JAEGER_BUILD/jaeger"
JAEGER_CONFIG="$REPO_ROOT/compose/jaeger/config.yaml"

svc_jaeger_port() { echo "$STGYM_JAEGER_QUERY_PORT"; }

svc_jaeger_install() {
    [[ -x "$JAEGER_BIN" ]] && return 0
    local go
    if command -v go >/dev/null; then go="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go
    else die "jaeger: the Go toolchain (>= 1.25) is needed to build Jaeger; install Go"
    fi
    log "jaeger: building Jaeger v$JAEGER_VERSION (takes minutes on a cold cache; log: $LOG_DIR/jaeger-build.log)"
    local tmp="$JAEGER_BUILD.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    (
        cd "$tmp"
        "$go" mod init jbuild
        "$go" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION"
        "$go" build -trimpath -ldflags="-s -w" -o jaeger github.com/jaegertracing/jaeger/cmd/jaeger
    ) > "$LOG_DIR/jaeger-build.log" 2>&1 || die "jaeger: build failed; log: $LOG_DIR/jaeger-build.log"
    [[ -x "$tmp/jaeger" ]] || die "jaeger: build produced no binary; log: $LOG_DIR/jaeger-build.log"
    rm -rf "$JAEGER_BUILD"
    mkdir -p "$JAEGER_BUILD"
    mv "$tmp/jaeger" "$JAEGER_BIN"
    rm -rf "$tmp"
}

svc_jaeger_start() {
    # Jaeger sets up its OpenSearch indices at start-up and exits when OpenSearch is not there.
    local deadline=$(( $(now) + READY_TIMEOUT ))
    until $CHECK opensearch 2>/dev/null; do
        [[ $(now) -lt $deadline ]] || die "jaeger: OpenSearch (its trace storage) not ready after ${READY_TIMEOUT}s"
        sleep 1
    done
    # The config reads these through ${env:...}.
    export STGYM_JAEGER_QUERY_PORT STGYM_JAEGER_QUERY_GRPC_PORT \
        STGYM_JAEGER_OTLP_GRPC_PORT STGYM_JAEGER_OTLP_HTTP_PORT STGYM_JAEGER_HEALTH_PORT \
        STGYM_JAEGER_METRICS_PORT
    export STGYM_JAEGER_OPENSEARCH_URL="${STGYM_JAEGER_OPENSEARCH_URL:-http://127.0.0.1:$STGYM_OPENSEARCH_PORT}"
    spawn jaeger "$JAEGER_CONFIG" "$JAEGER_BIN" --config "$JAEGER_CONFIG"
}

# A new config or binary restarts the running Jaeger on `up`.
svc_jaeger_fingerprint() { cat "$JAEGER_CONFIG"; echo "$JAEGER_BIN"; }

svc_jaeger_ready() {
    $CHECK http "http://127.0.0.1:$STGYM_JAEGER_HEALTH_PORT/status" && $CHECK jaeger
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main jaeger "$@"; fi
