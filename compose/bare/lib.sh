# Shared helpers of the bare-machine service scripts (sourced, never run).
#
# Every service script defines, for each service NAME it manages (dashes become underscores):
#   svc_NAME_port      the port it answers on (echo)
#   svc_NAME_install   install binaries / downloads (idempotent, cached under ~/.cache/stgym)
#   svc_NAME_start     start the process in the background, pid file under $RUN_DIR/pids
#   svc_NAME_ready     one readiness probe speaking the service's real protocol (exit 0 = ready)
#   svc_NAME_stop      (optional) stop; the default sends TERM to the pid of the pid file
#   svc_NAME_fingerprint, svc_NAME_reload  (optional) see config_changed below
# and the generic svc_install / svc_start / svc_wait / svc_down / svc_status below drive them.

set -euo pipefail
# Sourced once even when services.sh sources every service script.
[[ -n "${STGYM_BARE_LIB_LOADED:-}" ]] && return 0
STGYM_BARE_LIB_LOADED=1

BARE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BARE_DIR/../.." && pwd)"
PY="${STGYM_PYTHON:-$REPO_ROOT/.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    echo "[services] $PY not found: run 'make venv' first (or set STGYM_PYTHON)" >&2
    exit 1
fi
# Every port, path and name comes from stgym/settings.py (env STGYM_<FIELD> overrides).
# The credentials (PostgreSQL roles, Kafka SCRAM user, webhook token) are generated on first
# use into settings.secrets_dir, mode 0600 (stgym/settings.py ensure_secrets).
eval "$(cd "$REPO_ROOT" && "$PY" -m stgym.settings --ensure-secrets --shell)"

HOST="$STGYM_HOST"
RUN_DIR="$STGYM_RUN_DIR"
CACHE_DIR="$STGYM_CACHE_DIR"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
CHECK="$PY $BARE_DIR/check.py"
mkdir -p "$RUN_DIR" "$PID_DIR" "$LOG_DIR" "$CACHE_DIR"
chmod 755 "$RUN_DIR"
# Readiness timeouts (seconds); generous because two cores are shared with everything else.
READY_TIMEOUT="${STGYM_READY_TIMEOUT:-240}"
STOP_TIMEOUT="${STGYM_STOP_TIMEOUT:-60}"

log() { echo "[services] $*" >&2; }
# A generated credential of settings.secrets_dir (never printed, never on a command line).
secret() { cat "${STGYM_SECRETS_DIR:-$RUN_DIR/secrets}/$1"; }
die() { echo "[services] ERROR: $*" >&2; exit 1; }
now() { date +%s; }
timing() { echo "[timing] $1 $(( $(now) - $2 )) s"; }

fn_name() { echo "${1//-/_}"; }
pid_file() { echo "$PID_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# The pid recorded for a service, if that process still runs (pid reuse is guarded by
# requiring the command line to contain the service's marker, set at start).
live_pid() {
    local name="$1" pf pid
    pf="$(pid_file "$name")"
    [[ -f "$pf" ]] || return 1
    pid="$(head -n1 "$pf")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -d "/proc/$pid" ]] || return 1
    local marker
    marker="$(sed -n 2p "$pf")"
    if [[ -n "$marker" ]] && ! tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -- "$marker"; then
        return 1
    fi
    echo "$pid"
}

# A port in use on this host's address or its loopback (where the services without
# authentication of their own listen: OpenSearch, Jaeger, the collector's receivers).
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Run a command as an unprivileged system user when we are root (PostgreSQL and OpenSearch
# refuse root). setpriv execs in place, so the pid we record is the service's own pid.
as_user() {
    local user="$1"; shift
    if [[ $EUID -eq 0 ]]; then
        setpriv --reuid="$user" --regid="$user" --init-groups -- env HOME="/tmp" "$@"
    else
        "$@"
    fi
}
# The same as a command prefix, for spawn: "${AS_USER[@]}" cmd...
as_user_prefix() {
    AS_USER=()
    if [[ $EUID -eq 0 ]]; then
        AS_USER=(setpriv "--reuid=$1" "--regid=$1" --init-groups -- env HOME=/tmp)
    fi
}

ensure_system_user() {
    local user="$1"
    [[ $EUID -eq 0 ]] || return 0
    id -u "$user" >/dev/null 2>&1 && return 0
    getent group "$user" >/dev/null || groupadd --system "$user"
    useradd --system --gid "$user" --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$user"
}

# A data directory owned by `user`. It lives under $RUN_DIR when that user can reach it;
# otherwise (a checkout under a private home) under /var/tmp, linked from $RUN_DIR.
owned_dir() {
    local user="$1" name="$2" dir="$RUN_DIR/$2"
    if [[ $EUID -ne 0 ]]; then mkdir -p "$dir"; echo "$dir"; return; fi
    if [[ -L "$dir" ]]; then
        dir="$(readlink -f "$dir")"
    elif [[ ! -d "$dir" ]] && ! runuser -u "$user" -- test -x "$RUN_DIR" 2>/dev/null; then
        local alt="/var/tmp/stgym-$(echo -n "$RUN_DIR" | sha256sum | cut -c1-12)/$name"
        mkdir -p "$alt"
        chmod 755 "$(dirname "$alt")"
        ln -sfn "$alt" "$dir"
        dir="$alt"
    fi
    mkdir -p "$dir"
    chown "$user:$user" "$dir"
    echo "$dir"
}

APT_UPDATED=""
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=""
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "packages missing (${missing[*]}) and not root: install them"
        sudo="sudo"
    fi
    log "apt-get install ${missing[*]}"
    if [[ -z "$APT_UPDATED" ]]; then
        $sudo apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
        APT_UPDATED=1
    fi
    # Debian's maintainer scripts try to start services; there is no init here and we start
    # our own copies, so tell invoke-rc.d not to.
    local policy=/usr/sbin/policy-rc.d created=""
    if [[ $EUID -eq 0 && ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && created=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        > "$LOG_DIR/apt.log" 2>&1 || { [[ -n $created ]] && rm -f $policy; die "apt-get install ${missing[*]} failed: see $LOG_DIR/apt.log"; }
    [[ -n $created ]] && rm -f $policy
    return 0
}

# Start "$@" detached (own session, stdin closed, output to the service log); record its pid
# and a marker string that must appear in its command line.
spawn() {
    local name="$1" marker="$2"; shift 2
    local lf pf
    lf="$(log_file "$name")"; pf="$(pid_file "$name")"
    echo "=== $(date -u +%FT%TZ) starting $name" >> "$lf"
    setsid "$@" >> "$lf" 2>&1 < /dev/null &
    local pid=$!
    printf '%s\n%s\n' "$pid" "$marker" > "$pf"
}

# Stop the process of the pid file: `signal` first, KILL after $STOP_TIMEOUT s.
stop_pid() {
    local name="$1" signal="${2:-TERM}" pid
    if ! pid="$(live_pid "$name")"; then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    kill "-$signal" "$pid" 2>/dev/null || true
    local deadline=$(( $(now) + STOP_TIMEOUT ))
    while [[ -d "/proc/$pid" ]] && [[ $(now) -lt $deadline ]]; do
        # a zombie child of ours counts as gone
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]] && break
        sleep 0.5
    done
    if [[ -d "/proc/$pid" ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]]; then
        log "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$(pid_file "$name")"
}

# Wait until svc_NAME_ready succeeds; fail naming the service and its log file.
wait_ready() {
    local name="$1" timeout="${2:-$READY_TIMEOUT}" f
    f="$(fn_name "$name")"
    local deadline=$(( $(now) + timeout ))
    while true; do
        if "svc_${f}_ready" >/dev/null 2>&1; then return 0; fi
        if ! live_pid "$name" >/dev/null; then
            echo "[services] ERROR: $name exited during start-up; log: $(log_file "$name")" >&2
            tail -n 20 "$(log_file "$name")" >&2 || true
            return 1
        fi
        if [[ $(now) -ge $deadline ]]; then
            echo "[services] ERROR: $name not ready after ${timeout}s (port $("svc_${f}_port")); log: $(log_file "$name")" >&2
            tail -n 20 "$(log_file "$name")" >&2 || true
            return 1
        fi
        sleep 1
    done
}

svc_install() {
    local name="$1" t0; t0=$(now)
    "svc_$(fn_name "$name")_install"
    timing "$name install" "$t0"
}

# Start unless already running and healthy. Returns 0 when nothing had to be started.
svc_start() {
    local name="$1" f port pid; f="$(fn_name "$name")"; port="$("svc_${f}_port")"
    if pid="$(live_pid "$name")"; then
        if config_changed "$name"; then
            # Its config files (or binary) changed since it started: reload or restart it.
            if declare -F "svc_${f}_reload" >/dev/null; then
                log "$name: configuration changed, reloading (pid $pid)"
                "svc_${f}_reload"
                save_fingerprint "$name"
                return 0
            fi
            log "$name: configuration changed, restarting (pid $pid)"
            svc_down "$name"
        elif "svc_${f}_ready" >/dev/null 2>&1; then
            log "$name already running (pid $pid, port $port)"
            return 0
        else
            log "$name (pid $pid) is running; waiting for it"
            return 0
        fi
    fi
    rm -f "$(pid_file "$name")"
    if port_open "$port"; then
        die "$name: port $HOST:$port is already taken by a process these scripts did not start (see: ss -ltnp 'sport = :$port'); stop it or set STGYM_* ports"
    fi
    local t0; t0=$(now)
    "svc_${f}_start"
    save_fingerprint "$name"
    timing "$name start" "$t0"
}

# Optional svc_NAME_fingerprint prints a digest of the service's config files and binary;
# `up` reloads (svc_NAME_reload) or restarts a running service whose digest changed.
fingerprint() {
    local f; f="$(fn_name "$1")"
    declare -F "svc_${f}_fingerprint" >/dev/null || return 0
    "svc_${f}_fingerprint" | sha256sum | cut -c1-16
}
save_fingerprint() { fingerprint "$1" > "$PID_DIR/$1.fingerprint"; }
config_changed() {
    local saved="$PID_DIR/$1.fingerprint"
    [[ -f "$saved" ]] || return 1
    [[ "$(cat "$saved")" != "$(fingerprint "$1")" ]]
}

svc_wait() {
    local name="$1" t0; t0=$(now)
    wait_ready "$name" || return 1
    timing "$name ready" "$t0"
}

svc_down() {
    local name="$1" f; f="$(fn_name "$name")"
    if declare -F "svc_${f}_stop" >/dev/null; then
        "svc_${f}_stop"
    else
        stop_pid "$name" TERM
    fi
    rm -f "$PID_DIR/$name.fingerprint"
}

svc_status() {
    local name="$1" f port pid state; f="$(fn_name "$name")"; port="$("svc_${f}_port")"
    if pid="$(live_pid "$name")"; then
        if "svc_${f}_ready" >/dev/null 2>&1; then state=healthy; else state=unhealthy; fi
    else
        pid="-"
        state=stopped
    fi
    printf '%-18s %-6s %-8s %s\n' "$name" "$port" "$pid" "$state"
    [[ $state == healthy ]]
}

# `bash compose/bare/<svc>.sh {install|up|down|status} [name...]` for a single script.
service_main() {
    local default="$1"; shift
    local cmd="${1:-status}"; shift || true
    local names=("$@"); [[ ${#names[@]} -gt 0 ]] || read -r -a names <<< "$default"
    local n
    case "$cmd" in
        install) for n in "${names[@]}"; do svc_install "$n"; done ;;
        up) for n in "${names[@]}"; do svc_install "$n"; svc_start "$n"; svc_wait "$n"; done ;;
        down) for n in "${names[@]}"; do svc_down "$n"; done ;;
        status) local rc=0; for n in "${names[@]}"; do svc_status "$n" || rc=1; done; return $rc ;;
        *) die "usage: $0 {install|up|down|status} [service...]" ;;
    esac
}
