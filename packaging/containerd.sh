#!/usr/bin/env bash
# Run a private containerd (CRI v1) for rkubelet's tests and examples, fully separate from any
# system containerd at /run/containerd: its own config, root, state, socket, runc root, CNI
# network (bridge + host-local + portmap) and IPAM data, all under one base directory.
#
# Usage:
#   containerd.sh start  BASE   write config, start containerd, import the local images,
#                               print the socket path (the only line on stdout)
#   containerd.sh stop   BASE   stop it, kill leftover shims/containers, unmount, remove the
#                               bridge and all runtime state (config and log are kept)
#   containerd.sh status BASE   exit 0 and print the socket path if it is up
#
# BASE is an absolute directory such as /var/tmp/rkubelet-ci/containerd. The socket is
# BASE/containerd.sock; the log is BASE/containerd.log; the pid is in BASE/containerd.pid.
#
# Environment:
#   RKUBELET_IMAGES_DIR   where the image tarballs live (default /var/tmp/rkubelet-images);
#                         built by packaging/images/build-images.sh when missing
#   RKUBELET_POD_CIDR     pod subnet, a /24 (default 10.244.N.0/24, N derived from BASE so that
#                         two instances with different bases get different subnets and bridges)
#   RKUBELET_CONTAINERD_SYSTEMD_CGROUP
#                         "true": runc's systemd cgroup driver (SystemdCgroup = true), for a
#                         containerd started where a systemd manager runs (the systemd driver
#                         tests start one in its own namespaces, tests/support/systemd-ns.sh)
#
# Settings that this kind of machine needs (and why):
#   restrict_oom_score_adj = true  runc may not lower oom_score_adj here; without it every
#                                  sandbox fails with "can't get final child's PID from pipe"
#   cni bin_dir = /usr/lib/cni     where Debian's containernetworking-plugins puts the plugins
#   SystemdCgroup = false          no systemd is running; cgroupfs driver (unless asked, above)
#   sandbox_image pause:3.6        imported from a local tarball, no registry is reachable
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
images_dir="${RKUBELET_IMAGES_DIR:-/var/tmp/rkubelet-images}"
# Image tarball -> the name it must have after import.
image_files=(pause-3.6.tar busybox-local.tar busybox-other.tar)
image_names=(registry.k8s.io/pause:3.6 docker.io/library/busybox:local docker.io/library/busybox:other)

log() { echo "containerd.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Paths derived from BASE
# ---------------------------------------------------------------------------------------------
set_paths() {
    base="$1"
    [[ "$base" == /* ]] || die "BASE must be an absolute path, got '$base'"
    base="${base%/}"
    case "$base" in
        "" | / | /run | /var | /var/lib | /tmp | /var/tmp | /run/containerd* | /var/lib/containerd*)
            die "refusing to use '$base' as BASE (system or shared path)" ;;
    esac
    sock="$base/containerd.sock"
    # sockaddr_un.sun_path is 108 bytes; containerd also creates "$sock.ttrpc".
    (( ${#sock} + 6 < 108 )) || die "socket path too long for a unix socket: $sock"
    config="$base/config.toml"
    pidfile="$base/containerd.pid"
    logfile="$base/containerd.log"
    root_dir="$base/root"
    state_dir="$base/state"
    runc_root="$base/runc"
    cni_conf_dir="$base/cni/net.d"
    cni_ipam_dir="$base/cni/ipam"

    # One /24 and one bridge per BASE: N in 20..219 from a checksum of the path.
    local n
    n=$(( $(printf '%s' "$base" | cksum | cut -d' ' -f1) % 200 + 20 ))
    pod_cidr="${RKUBELET_POD_CIDR:-10.244.$n.0/24}"
    [[ "$pod_cidr" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] \
        || die "RKUBELET_POD_CIDR must be a /24 like 10.244.7.0/24, got '$pod_cidr'"
    pod_gw="${BASH_REMATCH[1]}.1"
    bridge="rkb${BASH_REMATCH[1]##*.}"
    net_name="rkubelet-${BASH_REMATCH[1]##*.}"
}

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

# The pid from the pid file if that process is alive and is a containerd using our config.
running_pid() {
    local pid
    [[ -r "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--config $config" || return 1
    echo "$pid"
}

answers() { timeout 5 ctr --address "$sock" version >/dev/null 2>&1; }

# Send TERM, wait up to $2 seconds, then KILL.
stop_pid() {
    local pid="$1" wait_s="$2" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid did not exit after TERM within ${wait_s}s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid still present after KILL"
}

# True if process $1 is a shim (or other helper) of this instance: its argv holds
# "-address" followed by our socket path.
serves_our_socket() {
    local -a args
    local i
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
        [[ "${args[$i]}" == "-address" && "${args[$((i + 1))]}" == "$sock" ]] && return 0
    done
    return 1
}

# Direct children of a pid, from /proc (no procps needed).
children_of() {
    local parent="$1" f line rest fields
    for f in /proc/[0-9]*/stat; do
        line="$(cat "$f" 2>/dev/null)" || continue
        rest="${line##*) }"            # fields after "pid (comm) "
        read -r -a fields <<<"$rest"
        if [[ "${fields[1]:-}" == "$parent" ]]; then
            f="${f#/proc/}"
            echo "${f%/stat}"
        fi
    done
}

# KILL a process and all of its descendants (children first collected, then killed).
kill_tree() {
    local pid="$1" child
    kill -STOP "$pid" 2>/dev/null || true
    for child in $(children_of "$pid"); do
        kill_tree "$child"
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Mount points at or below BASE, deepest (last mounted) first.
mounts_under_base() {
    awk -v b="$base" '{ m = $5; gsub(/\\040/, " ", m); if (m == b || index(m, b "/") == 1) print m }' \
        /proc/self/mountinfo | tac
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

# Replace the first line matching $2 (an ERE) with $3 (which may start with \1, the indent)
# and check the result. '#' is the sed delimiter, so neither may contain it.
set_line() {
    local file="$1" pattern="$2" replacement="$3"
    grep -Eq "$pattern" "$file" || die "containerd default config has no line matching '$pattern'"
    sed -E -i "0,\\#${pattern}#s##${replacement}#" "$file"
    grep -qF "${replacement#\\1}" "$file" || die "could not set '$replacement' in $file"
}

write_config() {
    local tmp="$config.tmp"
    containerd config default >"$tmp" || die "'containerd config default' failed"

    # Top level: our own root, state, socket; skip snapshotters that cannot work here.
    set_line "$tmp" '^root = .*' "root = \"$root_dir\""
    set_line "$tmp" '^state = .*' "state = \"$state_dir\""
    set_line "$tmp" '^disabled_plugins = .*' \
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]'
    set_line "$tmp" '^  address = "/run/containerd/containerd.sock"' "  address = \"$sock\""
    # CRI plugin.
    set_line "$tmp" '^( *)restrict_oom_score_adj = .*' '\1restrict_oom_score_adj = true'
    set_line "$tmp" '^( *)sandbox_image = .*' '\1sandbox_image = "registry.k8s.io/pause:3.6"'
    # Network namespaces as files under our state dir (not /var/run/netns), so stop finds them.
    set_line "$tmp" '^( *)netns_mounts_under_state_dir = .*' '\1netns_mounts_under_state_dir = true'
    set_line "$tmp" '^( *)bin_dir = .*' '\1bin_dir = "/usr/lib/cni"'
    set_line "$tmp" '^( *)conf_dir = .*' "\\1conf_dir = \"$cni_conf_dir\""
    if [[ "${RKUBELET_CONTAINERD_SYSTEMD_CGROUP:-false}" == true ]]; then
        set_line "$tmp" '^( *)SystemdCgroup = .*' '\1SystemdCgroup = true'
    else
        set_line "$tmp" '^( *)SystemdCgroup = .*' '\1SystemdCgroup = false'
    fi
    # runc's state for CRI containers under BASE rather than /run/containerd/runc.
    set_line "$tmp" '^( *)Root = ""' "\\1Root = \"$runc_root\""
    set_line "$tmp" '^( *)path = "/opt/containerd"' "\\1path = \"$base/opt\""
    # The streaming server (exec/attach/port-forward) stays on loopback with a random port.
    grep -q '^ *stream_server_address = "127.0.0.1"' "$tmp" \
        || die "expected the CRI stream server on 127.0.0.1 in the default config"
    mv "$tmp" "$config"
}

write_cni_config() {
    mkdir -p "$cni_conf_dir" "$cni_ipam_dir"
    rm -f "$cni_conf_dir"/*
    # The bridge is made by start() with the gateway address on it, so the plugin runs with
    # isGateway=false and never touches host sysctls; pods get only their subnet route, so
    # their traffic cannot leave the bridge. host-local keeps the gateway (.1) out of its pool.
    cat >"$cni_conf_dir/10-rkubelet.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$net_name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$pod_cidr", "gateway": "$pod_gw" }]],
        "dataDir": "$cni_ipam_dir"
      }
    },
    {
      "type": "portmap",
      "capabilities": { "portMappings": true }
    }
  ]
}
EOF
}

ensure_bridge() {
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        log "creating bridge $bridge with $pod_gw/24"
        ip link add "$bridge" type bridge || die "cannot create bridge $bridge"
    fi
    if ! ip -4 addr show dev "$bridge" | grep -qF " $pod_gw/24 "; then
        ip addr add "$pod_gw/24" dev "$bridge" || die "cannot add $pod_gw/24 to $bridge"
    fi
    ip link set "$bridge" up || die "cannot bring $bridge up"
}

ensure_images() {
    local f missing=0
    for f in "${image_files[@]}"; do
        [[ -s "$images_dir/$f" ]] || missing=1
    done
    if ((missing)); then
        log "image tarballs missing in $images_dir: building them"
        bash "$script_dir/images/build-images.sh" "$images_dir" >&2 || die "image build failed"
    fi
}

import_images() {
    local i listed
    for i in "${!image_files[@]}"; do
        log "importing ${image_names[$i]} from $images_dir/${image_files[$i]}"
        timeout 120 ctr --address "$sock" -n k8s.io images import "$images_dir/${image_files[$i]}" >&2 \
            || fail_with_log "image import of ${image_files[$i]} failed"
    done
    listed="$(timeout 20 ctr --address "$sock" -n k8s.io images ls -q)" || fail_with_log "ctr images ls failed"
    for i in "${!image_names[@]}"; do
        grep -qxF "${image_names[$i]}" <<<"$listed" \
            || fail_with_log "image ${image_names[$i]} not listed after import (have: $(echo "$listed" | tr '\n' ' '))"
    done
}

fail_with_log() {
    log "ERROR: $*"
    if [[ -f "$logfile" ]]; then
        log "last lines of $logfile:"
        tail -n 40 "$logfile" >&2
    fi
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------

cmd_start() {
    local pid i
    [[ $EUID -eq 0 ]] || die "must run as root"
    for tool in containerd ctr runc ip; do
        command -v "$tool" >/dev/null || die "'$tool' not found: run packaging/host-setup.sh first"
    done
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
        || die "CNI plugins missing in /usr/lib/cni: run packaging/host-setup.sh first"

    if pid="$(running_pid)" && answers; then
        log "containerd already running for $base (pid $pid)"
        ensure_bridge
        ensure_images
        import_images
        echo "$sock"
        return 0
    fi
    # Leftovers of an earlier run that was not stopped: clean them first.
    if [[ -e "$pidfile" || -e "$state_dir" || -S "$sock" ]]; then
        log "found leftovers of an earlier run in $base: cleaning up first"
        cmd_stop
    fi

    mkdir -p "$base" "$root_dir" "$state_dir" "$runc_root"
    ensure_images
    write_config
    write_cni_config
    ensure_bridge
    [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.prev"

    log "starting containerd --config $config (log $logfile)"
    # Own session: a Ctrl-C aimed at the foreground job (rkubelet) must not reach containerd,
    # which has to outlive rkubelet's shutdown. No stdin, so it never waits on a terminal.
    setsid containerd --config "$config" </dev/null >>"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"

    for ((i = 0; i < 300; i++)); do   # up to 30 s
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            fail_with_log "containerd exited during start-up"
        fi
        if answers; then break; fi
        sleep 0.1
    done
    answers || fail_with_log "containerd did not answer on $sock within 30 s"
    # The pid file must name containerd itself (setsid execs in place when not a group leader).
    running_pid >/dev/null || fail_with_log "pid $pid is not the containerd started with $config"
    log "containerd is up (pid $pid) on $sock"

    import_images
    # CRI must be serving too, not only the core API.
    timeout 10 ctr --address "$sock" plugins ls 2>/dev/null | grep -E 'io\.containerd\.grpc\.v1 +cri +.* ok' >/dev/null \
        || fail_with_log "the CRI plugin is not ok (see 'ctr --address $sock plugins ls')"
    echo "$sock"
}

cmd_stop() {
    local pid b ns id root addr m any
    [[ $EUID -eq 0 ]] || die "must run as root"
    if [[ ! -d "$base" ]]; then
        log "nothing to stop: $base does not exist"
        return 0
    fi

    if pid="$(running_pid)"; then
        log "stopping containerd pid $pid"
        stop_pid "$pid" 15
    fi
    rm -f "$pidfile"

    # Containers: one bundle dir per task, named by its namespace and id.
    for b in "$state_dir"/io.containerd.runtime.v2.task/*/*; do
        [[ -d "$b" ]] || continue
        id="${b##*/}"
        ns="${b%/*}"; ns="${ns##*/}"
        # Kill the container's processes and remove its cgroups through runc.
        for root in "$runc_root/$ns" "/run/containerd/runc/$ns"; do
            if [[ -e "$root/$id" ]]; then
                log "removing container $ns/$id (runc root $root)"
                timeout 20 runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
            fi
        done
        # The shim's socket lives in /run/containerd/s/ whatever the state dir: remove it.
        addr="$(cat "$b/address" 2>/dev/null || true)"
        addr="${addr#unix://}"
        if [[ "$addr" == /run/containerd/s/* && -S "$addr" ]]; then rm -f "$addr"; fi
    done

    # Shims of this instance (their argv holds "-address SOCK"), and whatever still runs below them.
    for m in /proc/[0-9]*/cmdline; do
        pid="${m#/proc/}"; pid="${pid%/cmdline}"
        [[ "$pid" == "$$" ]] && continue
        if serves_our_socket "$pid"; then
            log "killing leftover process $pid ($(tr '\0' ' ' 2>/dev/null <"$m" | cut -c1-80))"
            kill_tree "$pid"
        fi
    done

    # Unmount rootfs overlays, network namespaces, shm... under BASE, deepest first.
    any=0
    while read -r m; do
        [[ -n "$m" ]] || continue
        any=1
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
    done < <(mounts_under_base)
    ((any)) && log "unmounted leftovers under $base"
    if [[ -n "$(mounts_under_base)" ]]; then
        die "mounts remain under $base: $(mounts_under_base | tr '\n' ' ')"
    fi

    if ip link show "$bridge" >/dev/null 2>&1; then
        log "deleting bridge $bridge"
        ip link del "$bridge" || log "cannot delete bridge $bridge"
    fi

    # Runtime state goes; the config and logs stay for inspection.
    rm -rf --one-file-system "$root_dir" "$state_dir" "$runc_root" "$base/opt" "$cni_ipam_dir"
    rm -f "$sock" "$sock.ttrpc"
    log "stopped and cleaned $base"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && answers; then
        log "running (pid $pid)"
        echo "$sock"
    else
        log "not running"
        return 1
    fi
}

[[ $# -eq 2 ]] || usage
set_paths "$2"
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
