#!/usr/bin/env bash
# Prometheus exporters (Debian packages): postgres-exporter (our PostgreSQL cluster), node-exporter
# (this machine), blackbox-exporter (TCP probe of the Kafka broker; modules in
# compose/prometheus/blackbox.yml). All on 127.0.0.1.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BLACKBOX_CONFIG="$REPO_ROOT/compose/prometheus/blackbox.yml"
PG_EXPORTER_QUERIES="$REPO_ROOT/compose/prometheus/postgres-exporter-queries.yaml"

svc_postgres_exporter_port() { echo "$STGYM_POSTGRES_EXPORTER_PORT"; }
svc_postgres_exporter_install() { apt_install prometheus-postgres-exporter; }
svc_postgres_exporter_start() {
    spawn postgres-exporter "$HOST:$STGYM_POSTGRES_EXPORTER_PORT" \
        env DATA_SOURCE_NAME="$STGYM_POSTGRES_URL?sslmode=disable" \
        prometheus-postgres-exporter "--web.listen-address=$HOST:$STGYM_POSTGRES_EXPORTER_PORT" \
        "--extend.query-path=$PG_EXPORTER_QUERIES"
}
svc_postgres_exporter_fingerprint() { cat "$PG_EXPORTER_QUERIES"; }
# Ready = it reaches the database (pg_up 1), not merely listening.
svc_postgres_exporter_ready() {
    $CHECK http "http://$HOST:$STGYM_POSTGRES_EXPORTER_PORT/metrics" $'\npg_up 1'
}

svc_node_exporter_port() { echo "$STGYM_NODE_EXPORTER_PORT"; }
svc_node_exporter_install() { apt_install prometheus-node-exporter; }
svc_node_exporter_start() {
    spawn node-exporter "$HOST:$STGYM_NODE_EXPORTER_PORT" \
        prometheus-node-exporter "--web.listen-address=$HOST:$STGYM_NODE_EXPORTER_PORT"
}
svc_node_exporter_ready() {
    $CHECK http "http://$HOST:$STGYM_NODE_EXPORTER_PORT/metrics" node_exporter_build_info
}

svc_blackbox_exporter_port() { echo "$STGYM_BLACKBOX_EXPORTER_PORT"; }
svc_blackbox_exporter_install() { apt_install prometheus-blackbox-exporter; }
svc_blackbox_exporter_start() {
    spawn blackbox-exporter "$HOST:$STGYM_BLACKBOX_EXPORTER_PORT" \
        prometheus-blackbox-exporter "--config.file=$BLACKBOX_CONFIG" \
        "--web.listen-address=$HOST:$STGYM_BLACKBOX_EXPORTER_PORT"
}
svc_blackbox_exporter_fingerprint() { cat "$BLACKBOX_CONFIG"; }
svc_blackbox_exporter_ready() {
    $CHECK http "http://$HOST:$STGYM_BLACKBOX_EXPORTER_PORT/metrics" blackbox_exporter_build_info
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    service_main "postgres-exporter node-exporter blackbox-exporter" "$@"
fi
