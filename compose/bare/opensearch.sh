#!/usr/bin/env bash
# OpenSearch (Elasticsearch API) from Maven Central's integ-test zip: no security plugin, plain
# HTTP on 127.0.0.1:$STGYM_OPENSEARCH_PORT. It refuses to run as root, so it runs as the
# system user `opensearch`. Heap: 512 MiB. Node config: compose/opensearch/opensearch.yml.
# Snapshot repository (path.repo) for `stgym backup`: $STGYM_RUN_DIR/opensearch/snapshots.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OPENSEARCH_VERSION=2.19.6
OPENSEARCH_ZIP="$CACHE_DIR/downloads/opensearch-$OPENSEARCH_VERSION.zip"
OPENSEARCH_HEAP="${STGYM_OPENSEARCH_HEAP:-512m}"
OS_USER=opensearch

svc_opensearch_port() { echo "$STGYM_OPENSEARCH_PORT"; }

svc_opensearch_install() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install maven
    command -v unzip >/dev/null || apt_install unzip
    ensure_system_user "$OS_USER"
    [[ -s "$OPENSEARCH_ZIP" ]] && return 0
    log "opensearch: fetching OpenSearch $OPENSEARCH_VERSION from Maven Central"
    local tmp="$CACHE_DIR/downloads/tmp.$$"
    mkdir -p "$tmp"
    mvn -B -q -Dmaven.repo.local="$CACHE_DIR/m2" dependency:copy \
        -Dartifact="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip" \
        -DoutputDirectory="$tmp" > "$LOG_DIR/opensearch-install.log" 2>&1 \
        || die "opensearch: Maven download failed; log: $LOG_DIR/opensearch-install.log"
    mv "$tmp/opensearch-$OPENSEARCH_VERSION.zip" "$OPENSEARCH_ZIP"
    rm -rf "$tmp"
}

svc_opensearch_start() {
    local base home
    base="$(owned_dir "$OS_USER" opensearch)"
    home="$base/opensearch-$OPENSEARCH_VERSION"
    if [[ ! -x "$home/bin/opensearch" ]]; then
        local t0; t0=$(now)
        rm -rf "$base"/opensearch-*
        unzip -q "$OPENSEARCH_ZIP" -d "$base"
        timing "opensearch unpack" "$t0"
    fi
    cp "$REPO_ROOT/compose/opensearch/opensearch.yml" "$home/config/opensearch.yml"
    # snapshots: the filesystem snapshot repository of `stgym backup` (path.repo).
    mkdir -p "$base/data" "$base/logs" "$base/snapshots"
    [[ $EUID -eq 0 ]] && chown -R "$OS_USER:$OS_USER" "$base"
    local java_home
    java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    as_user_prefix "$OS_USER"
    (
        cd "$home"
        spawn opensearch "-Epath.data=$base/data" "${AS_USER[@]}" \
            env OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_JAVA_OPTS="-Xms$OPENSEARCH_HEAP -Xmx$OPENSEARCH_HEAP" \
            "$home/bin/opensearch" \
            -Enetwork.host=127.0.0.1 -Ehttp.port="$STGYM_OPENSEARCH_PORT" \
            -Etransport.port="$STGYM_OPENSEARCH_TRANSPORT_PORT" \
            -Epath.data="$base/data" -Epath.logs="$base/logs" -Epath.repo="$base/snapshots"
    )
}

svc_opensearch_ready() {
    port_open "$STGYM_OPENSEARCH_PORT" || return 1
    $CHECK opensearch
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main opensearch "$@"; fi
