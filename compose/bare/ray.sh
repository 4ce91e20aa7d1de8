#!/usr/bin/env bash
# Ray across machines (README "Running on several machines"): `ray-head` on the services host
# (the GCS on $HOST:$STGYM_RAY_PORT; no CPUs of its own, so rollouts run on the trainer hosts),
# `ray-worker` on each trainer host (joins $STGYM_RAY_ADDRESS, its raylet on
# $HOST:$STGYM_RAY_NODE_MANAGER_PORT, offering $STGYM_RAY_WORKER_CPUS CPUs, 0 = all). Started only when named
# (`services.sh up ray-head`). Token authentication on every node: RAY_AUTH_MODE=token and the
# generated secrets_dir/ray.token (or STGYM_RAY_AUTH_TOKEN), the same as `stgym train
# --ray-address` reads (stgym/settings.py ray_auth_env). Ready = the GCS, asked with the token,
# lists this host's node alive. Needs the venv with the `rl` extra (Ray).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RAY_BIN="$REPO_ROOT/.venv/bin/ray"
# Ray's session files and sockets: a short path (a Unix socket path has at most 107 bytes),
# linked as $RUN_DIR/ray so that `services.sh clean` removes it.
RAY_TMP="/tmp/stgym-ray-$(echo -n "$RUN_DIR" | sha256sum | cut -c1-12)"

ray_install() {
    [[ -x "$RAY_BIN" ]] || die "ray: $RAY_BIN is missing; install the rl extra (make venv)"
}

# The token reaches Ray through the environment (never a command line).
ray_auth_env() {
    export RAY_AUTH_MODE=token
    if [[ -n "$STGYM_RAY_AUTH_TOKEN" ]]; then
        export RAY_AUTH_TOKEN="$STGYM_RAY_AUTH_TOKEN"
    else
        export RAY_AUTH_TOKEN_PATH="${STGYM_SECRETS_DIR:-$RUN_DIR/secrets}/ray.token"
        [[ -s "$RAY_AUTH_TOKEN_PATH" ]] || die "ray: $RAY_AUTH_TOKEN_PATH is missing: copy the services host's secrets folder here"
    fi
}

ray_start() {
    local name="$1"; shift
    ray_auth_env
    mkdir -p "$RAY_TMP"
    ln -sfn "$RAY_TMP" "$RUN_DIR/ray"
    spawn "$name" "--temp-dir=$RAY_TMP" "$RAY_BIN" start --block --disable-usage-stats \
        --node-ip-address="$HOST" --temp-dir="$RAY_TMP" "$@"
}

svc_ray_head_port() { echo "$STGYM_RAY_PORT"; }
svc_ray_head_install() { ray_install; }
svc_ray_head_start() {
    ray_start ray-head --head --port="$STGYM_RAY_PORT" --num-cpus=0 --include-dashboard=false
}
svc_ray_head_ready() { $CHECK ray; }

svc_ray_worker_port() { echo "$STGYM_RAY_NODE_MANAGER_PORT"; }
svc_ray_worker_install() { ray_install; }
svc_ray_worker_start() {
    local cpus=()
    [[ "$STGYM_RAY_WORKER_CPUS" == 0 ]] || cpus=(--num-cpus="$STGYM_RAY_WORKER_CPUS")
    ray_start ray-worker --address="$STGYM_RAY_ADDRESS" \
        --node-manager-port="$STGYM_RAY_NODE_MANAGER_PORT" "${cpus[@]}"
}
svc_ray_worker_ready() { $CHECK ray; }

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then service_main ray-head "$@"; fi
