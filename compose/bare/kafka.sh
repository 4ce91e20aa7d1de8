#!/usr/bin/env bash
# Apache Kafka (KRaft, one node) from Maven Central: compose/kafka/pom.xml pins the release;
# its runtime classpath is cached under ~/.cache/stgym/kafka-<version>/libs. Data and the
# rendered server.properties live under $STGYM_RUN_DIR/kafka. Heap: 512 MiB (STGYM_KAFKA_HEAP).
# Listeners: PLAINTEXT on 127.0.0.1:$STGYM_KAFKA_PORT, SASL_PLAINTEXT (SCRAM-SHA-512) on
# $STGYM_KAFKA_LISTEN_HOST (default $STGYM_HOST):$STGYM_KAFKA_SASL_PORT for other machines.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO_ROOT/compose/kafka/pom.xml")"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_HEAP="${STGYM_KAFKA_HEAP:-512m}"
# The name clients on other machines use to reach this broker (README: several machines).
KAFKA_ADVERTISED_HOST="${STGYM_KAFKA_ADVERTISED_HOST:-$HOST}"
KAFKA_LISTEN_HOST="${STGYM_KAFKA_LISTEN_HOST:-$HOST}"

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }

svc_kafka_port() { echo "$STGYM_KAFKA_PORT"; }

svc_kafka_install() {
    if ! command -v java >/dev/null || [[ "$(java_major)" -lt 17 ]]; then
        apt_install openjdk-17-jre-headless
    fi
    command -v mvn >/dev/null || apt_install maven
    [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] && return 0
    log "kafka: fetching Kafka $KAFKA_VERSION and its classpath from Maven Central"
    local tmp="$KAFKA_LIBS.tmp.$$"
    rm -rf "$tmp"
    mvn -B -q -f "$REPO_ROOT/compose/kafka/pom.xml" -Dmaven.repo.local="$CACHE_DIR/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        > "$LOG_DIR/kafka-install.log" 2>&1 \
        || die "kafka: Maven download failed; log: $LOG_DIR/kafka-install.log"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
}

KAFKA_JAVA=()
kafka_java_args() {
    KAFKA_JAVA=(java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
        -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
        -cp "$KAFKA_LIBS/*")
}
kafka_java() { kafka_java_args; "${KAFKA_JAVA[@]}" "$@"; }

svc_kafka_start() {
    local dir="$RUN_DIR/kafka" data="$RUN_DIR/kafka/data"
    mkdir -p "$data"
    sed -e "s#@HOST@#$HOST#g" -e "s#@PORT@#$STGYM_KAFKA_PORT#g" \
        -e "s#@CONTROLLER_PORT@#$STGYM_KAFKA_CONTROLLER_PORT#g" \
        -e "s#@ADVERTISED_HOST@#$KAFKA_ADVERTISED_HOST#g" -e "s#@SASL_PORT@#$STGYM_KAFKA_SASL_PORT#g" \
        -e "s#@LISTEN_HOST@#$KAFKA_LISTEN_HOST#g" -e "s#@LOG_DIRS@#$data#g" \
        "$REPO_ROOT/compose/kafka/server.properties" > "$dir/server.properties"
    if [[ ! -f "$data/meta.properties" ]]; then
        local t0 cluster_id; t0=$(now)
        cluster_id="$("$PY" -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
        # "--cluster-id=": an id drawn with a leading "-" would otherwise read as an option.
        kafka_java kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$dir/server.properties" \
            --ignore-formatted >> "$(log_file kafka)" 2>&1 \
            || die "kafka: storage format failed; log: $(log_file kafka)"
        timing "kafka format" "$t0"
    fi
    kafka_java_args
    spawn kafka "$dir/server.properties" "${KAFKA_JAVA[@]}" kafka.Kafka "$dir/server.properties"
}

svc_kafka_ready() {
    (exec 3<>"/dev/tcp/127.0.0.1/$STGYM_KAFKA_PORT") 2>/dev/null || return 1  # PLAINTEXT: loopback
    $CHECK kafka || return 1
    kafka_apply_scram
}

# The SCRAM-SHA-512 credential of the SASL listener follows secrets_dir/kafka.password: set
# (over the loopback PLAINTEXT listener) when the file is new or changed.
kafka_apply_scram() {
    local marker="$RUN_DIR/kafka/.scram-applied" digest
    digest="$(echo "$STGYM_KAFKA_SASL_USERNAME"; secret kafka.password | sha256sum)"
    [[ -f "$marker" && "$(cat "$marker")" == "$digest" ]] && return 0
    $PY "$BARE_DIR/kafka_users.py" >> "$(log_file kafka)" 2>&1 || return 1
    echo "$digest" > "$marker"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main kafka "$@"; fi
