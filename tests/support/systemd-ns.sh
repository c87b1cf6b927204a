#!/usr/bin/env bash
# A real systemd manager for the systemd cgroup driver tests, on a machine where systemd is
# installed but not PID 1: systemd runs as PID 1 of its own PID and mount namespaces, in a
# cgroup of its own in every hierarchy, with a private /run (its D-Bus socket
# /run/systemd/private, as on a systemd host) and a unit directory holding one empty target,
# so it starts nothing of the host's. Processes enter it with
# `nsenter -t PID -p -m` (containerd with SystemdCgroup = true, then rkubelet), and see
# exactly what they see on a systemd host: PID 1 is systemd, /proc is the namespace's, and
# slices appear under the cgroup tree systemd owns.
#
# Usage:
#   systemd-ns.sh start BASE   start it; prints systemd's PID (host view), the only stdout line
#   systemd-ns.sh stop  BASE   kill every process of the namespace and remove its cgroups
#
# BASE is an absolute scratch directory (the log and the PID file go there).
set -euo pipefail

die() { echo "systemd-ns.sh: ERROR: $*" >&2; exit 1; }

cmd="${1:-}"
base="${2:-}"
[[ "$base" == /* ]] || die "BASE must be an absolute path, got '$base'"
base="${base%/}"
pidfile="$base/systemd.pid"
# One cgroup per BASE, named after it.
name="rkubelet-systemd-$(printf '%s' "$base" | cksum | cut -d' ' -f1)"

# Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, name=systemd, and the
# v2 tree), or the v2 root alone on a unified host.
hierarchies() {
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        echo /sys/fs/cgroup
        return
    fi
    hierarchies_under /sys/fs/cgroup
}

hierarchies_under() {
    awk -v base="$1/" '$3 ~ /^cgroup2?$/ && index($2, base) == 1 { print $2 }' /proc/mounts | sort -u
}

remove_cgroups() {
    local h
    for h in $(hierarchies); do
        [[ -d "$h/$name" ]] || continue
        find "$h/$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# v1 hierarchies this host has but does not mount: systemd in the namespace mounts every
# controller the host leaves unmounted (hugetlb, perf_event, net_cls,net_prio, ...), which
# creates a hierarchy that outlives the namespace as long as cgroups remain in it; every
# process then lists it in /proc/self/cgroup, and cgroup readers (containerd's stats) that
# cannot find its mount fail. Such a hierarchy serves nothing on the host, so its cgroups
# are removed here (it is mounted for that a moment), and the kernel drops it when it is
# unmounted without children (so it is tried again until none is left).
remove_unmounted_hierarchies() {
    local controllers dir
    for controllers in $(unmounted_hierarchies); do
        dir="$(mktemp -d /tmp/rkubelet-hierarchy.XXXXXX)"
        if mount -t cgroup -o "$controllers" cgroup "$dir" 2>/dev/null; then
            find "$dir" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
            umount "$dir"
        fi
        rmdir "$dir"
    done
}

# The controller lists (`hugetlb`, `net_cls,net_prio`) of the v1 hierarchies in
# /proc/self/cgroup that nothing mounts.
unmounted_hierarchies() {
    local line controllers mounted
    [[ -f /sys/fs/cgroup/cgroup.controllers ]] && return 0
    while IFS= read -r line; do
        controllers="$(cut -d: -f2 <<<"$line")"
        [[ -n "$controllers" && "$controllers" != name=* ]] || continue
        mounted="$(awk -v c="$controllers" '$3 == "cgroup" {
            n = split($4, opts, ","); k = split(c, want, ","); hit = 0
            for (i = 1; i <= k; i++) for (j = 1; j <= n; j++) if (opts[j] == want[i]) hit++
            if (hit == k) { print $2; exit } }' /proc/mounts)"
        [[ -n "$mounted" ]] || echo "$controllers"
    done </proc/self/cgroup
}

# Runs as PID 1 of the new namespaces, then becomes systemd.
inner() {
    local h
    for h in $(hierarchies); do
        mkdir -p "$h/$name"
        if [[ -f "$h/cpuset.cpus" && ! -f "$h/cgroup.controllers" ]]; then
            cat "$h/cpuset.cpus" >"$h/$name/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/$name/cpuset.mems"
        fi
        echo $$ >"$h/$name/cgroup.procs"
    done
    mount --make-rprivate /
    mount -t tmpfs -o mode=755 tmpfs /run
    if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
        # A /sys/fs/cgroup of the namespace's own holding the same hierarchies, so the mount
        # points systemd adds for controllers the host leaves unmounted stay in here.
        mkdir /run/host-cgroup
        mount --rbind /sys/fs/cgroup /run/host-cgroup
        mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
        for h in $(hierarchies_under /run/host-cgroup); do
            mkdir -p "/sys/fs/cgroup/${h#/run/host-cgroup/}"
            mount --bind "$h" "/sys/fs/cgroup/${h#/run/host-cgroup/}"
        done
        umount -l /run/host-cgroup
        rmdir /run/host-cgroup
    fi
    mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
    printf '[Unit]\nDescription=rkubelet systemd driver tests\n' \
        >/etc/systemd/system/rkubelet-test.target
    export container=rkubelet-test
    exec /lib/systemd/systemd --system --unit=rkubelet-test.target --log-target=console
}

start() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    [[ -x /lib/systemd/systemd ]] || die "/lib/systemd/systemd not found (apt-get install systemd)"
    command -v unshare >/dev/null || die "unshare not found (util-linux)"
    [[ -e "$pidfile" ]] && stop
    mkdir -p "$base"
    setsid unshare --pid --mount --fork --mount-proc bash "${BASH_SOURCE[0]}" inner "$base" \
        </dev/null >"$base/systemd.log" 2>&1 &
    local unshare_pid=$! pid="" i
    for ((i = 0; i < 100; i++)); do
        pid="$(pgrep -P "$unshare_pid" | head -1 || true)"
        if [[ -n "$pid" && -S "/proc/$pid/root/run/systemd/private" ]]; then
            echo "$pid" >"$pidfile"
            echo "$pid"
            return 0
        fi
        kill -0 "$unshare_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "--- $base/systemd.log" >&2
    tail -20 "$base/systemd.log" >&2 || true
    die "systemd did not come up within 10 s"
}

stop() {
    local pid
    if [[ -f "$pidfile" ]]; then
        pid="$(cat "$pidfile")"
        # SIGKILL to a PID namespace's init ends every process in it.
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == systemd ]]; then
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [[ -e "/proc/$pid" ]] || break
                sleep 0.1
            done
        fi
        rm -f "$pidfile"
    fi
    # The kernel removes the processes a moment after; their cgroups empty then, and a
    # hierarchy is dropped when it is unmounted without children.
    for ((i = 0; i < 100; i++)); do
        remove_unmounted_hierarchies
        remove_cgroups
        if [[ -z "$(for h in $(hierarchies); do [[ -d "$h/$name" ]] && echo x; done)" \
            && -z "$(unmounted_hierarchies)" ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "systemd-ns.sh: cgroups of $name or hierarchies it mounted remain:" \
        "$(unmounted_hierarchies | tr '\n' ' ')" >&2
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    inner) inner ;;
    *) die "usage: systemd-ns.sh start|stop BASE" ;;
esac
