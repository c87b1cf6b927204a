#!/usr/bin/env bash
# Run rkubelet against a real containerd with the static pods in examples/pods/:
#
#   examples/run.sh [--keep-containerd]      (as root)
#
# What it does:
#   1. packaging/host-setup.sh: installs containerd, runc, CNI plugins, busybox-static, cmake
#      if missing, and builds the local images (registry.k8s.io/pause:3.6 and
#      docker.io/library/busybox:local; no registry is needed)
#   2. cargo build --release (CARGO_TARGET_DIR defaults to /var/tmp/rkubelet-target)
#   3. starts a private containerd: packaging/containerd.sh start /var/tmp/rkubelet-example/containerd
#   4. runs rkubelet in the foreground with --pod-manifest-path examples/pods; it logs each
#      pod's state changes. Watch the pods with the runtime's own client in another shell:
#        ctr --address /var/tmp/rkubelet-example/containerd/containerd.sock -n k8s.io containers ls
#      and their logs under /var/tmp/rkubelet-example/logs/pods/.
#   5. Ctrl-C (or SIGTERM to this script) stops rkubelet; then containerd is stopped and cleaned
#      up, unless --keep-containerd was given (stop it later with
#      packaging/containerd.sh stop /var/tmp/rkubelet-example/containerd).
#
# Environment:
#   RKUBELET_BIN      use this rkubelet binary instead of building one
#   CARGO_TARGET_DIR  build directory (default /var/tmp/rkubelet-target)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

example_dir=/var/tmp/rkubelet-example
cd_base="$example_dir/containerd"
keep_containerd=0

for arg in "$@"; do
    case "$arg" in
        --keep-containerd) keep_containerd=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "examples/run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

section() { printf '\n==================== %s ====================\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "examples/run.sh: needs root (containers, cgroups, network namespaces); run it as root" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
section "host set-up"
bash packaging/host-setup.sh

# ---------------------------------------------------------------------------------------------
section "rkubelet binary"
if [[ -n "${RKUBELET_BIN:-}" ]]; then
    rkubelet="$RKUBELET_BIN"
else
    if ! command -v cargo >/dev/null 2>&1; then
        for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
            if [[ -x "$d/cargo" ]]; then PATH="$d:$PATH"; break; fi
        done
    fi
    command -v cargo >/dev/null 2>&1 || { echo "examples/run.sh: cargo not found" >&2; exit 1; }
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rkubelet-target}"
    echo "cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR; a first build takes ~10 minutes)"
    timeout --foreground -k 30 3600 cargo build --release </dev/null
    # Builds name their target (.cargo/config.toml): the output is under the host triple.
    rkubelet="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release/rkubelet"
fi
[[ -x "$rkubelet" ]] || { echo "examples/run.sh: $rkubelet is not an executable" >&2; exit 1; }
echo "using $rkubelet"

# ---------------------------------------------------------------------------------------------
section "containerd"
rk_pid=""
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    local rc=$?
    trap - INT TERM
    if [[ -n "$rk_pid" ]] && kill -0 "$rk_pid" 2>/dev/null; then
        echo "stopping rkubelet (pid $rk_pid)"
        kill -TERM "$rk_pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do kill -0 "$rk_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$rk_pid" 2>/dev/null || true
    fi
    if ((keep_containerd)); then
        section "containerd left running (--keep-containerd)"
        echo "socket: $cd_base/containerd.sock"
        echo "stop it with (as root): packaging/containerd.sh stop $cd_base"
    else
        section "stopping containerd"
        bash "$repo_root/packaging/containerd.sh" stop "$cd_base" || true
    fi
    return "$rc"
}
trap cleanup EXIT

sock="$(bash packaging/containerd.sh start "$cd_base")"
echo "containerd socket: $sock"

# ---------------------------------------------------------------------------------------------
node_name="$(tr '[:upper:]' '[:lower:]' </proc/sys/kernel/hostname)"
mkdir -p "$example_dir/root" "$example_dir/logs/pods"
args=(
    --container-runtime-endpoint "unix://$sock"
    --pod-manifest-path "$repo_root/examples/pods"
    --root-dir "$example_dir/root"
    --pod-logs-dir "$example_dir/logs/pods"
    --hostname-override "$node_name"
    # The kubelet API on loopback only: this example has no cluster to authenticate callers.
    --address 127.0.0.1
    -v 2
)
section "rkubelet (Ctrl-C to stop)"
echo "$rkubelet ${args[*]}"
echo "watch: ctr --address $sock -n k8s.io containers ls"
echo "logs:  $example_dir/logs/pods/"
echo

# rkubelet runs as a child so that Ctrl-C and SIGTERM reach it through the traps below
# (a waiting shell would otherwise hold a TERM until the child had exited). containerd runs in
# its own session and keeps running until rkubelet has shut down.
"$rkubelet" "${args[@]}" </dev/null &
rk_pid=$!
stop_at=""
# shellcheck disable=SC2317  # called through the INT and TERM traps
stop_requested() {
    echo
    echo "stop requested: sending SIGTERM to rkubelet (pid $rk_pid)"
    kill -TERM "$rk_pid" 2>/dev/null || true
    [[ -n "$stop_at" ]] || stop_at=$SECONDS
}
trap stop_requested INT TERM

# `wait` returns early when a trapped signal arrives. Once a stop was requested, give rkubelet
# 30 s to shut down, then KILL it.
while kill -0 "$rk_pid" 2>/dev/null; do
    if [[ -z "$stop_at" ]]; then
        wait "$rk_pid" || true
    elif ((SECONDS - stop_at >= 30)); then
        echo "rkubelet did not exit 30 s after SIGTERM: sending SIGKILL"
        kill -KILL "$rk_pid" 2>/dev/null || true
        sleep 0.2
    else
        sleep 0.2
    fi
done
rc=0
wait "$rk_pid" || rc=$?
trap - INT TERM
rk_pid=""
echo "rkubelet exited with status $rc"
exit "$rc"
