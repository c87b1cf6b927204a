#!/usr/bin/env bash
# Prepare a Debian 12 host for building and testing rkubelet. Idempotent; run as root.
#
#  1. Installs the Debian packages that are missing (apt-get update only when something is):
#     cmake (gRPC core build), containerd, runc, CNI plugins, busybox-static (test images),
#     iproute2 (bridge), iptables (CNI portmap), python3 (image builder), ca-certificates,
#     and the packaging tools (binutils, dpkg-dev, rpm, systemd, init-system-helpers).
#  2. Builds the local test images (packaging/images/build-images.sh) when their tarballs are
#     missing or were built from another busybox binary or another version of the builder.
#
# Usage: host-setup.sh
# Environment: RKUBELET_IMAGES_DIR  image tarball directory (default /var/tmp/rkubelet-images)
# With everything present it takes well under a few seconds and touches nothing.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
images_dir="${RKUBELET_IMAGES_DIR:-/var/tmp/rkubelet-images}"

log() { echo "host-setup: $*"; }

if [[ $EUID -ne 0 ]]; then
    echo "host-setup: must run as root" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
packages=(
    cmake                       # grpcio-sys builds gRPC core with cmake
    containerd                  # CRI v1 runtime for e2e tests and examples
    runc
    containernetworking-plugins # bridge, host-local, portmap, loopback in /usr/lib/cni
    busybox-static              # the only binary inside the local test images
    iproute2                    # ip: pod bridge set-up and clean-up
    iptables                    # used by the CNI portmap plugin
    python3                     # the image builder (stdlib only)
    ca-certificates
    binutils                    # strip and readelf: the packaged binary
    dpkg-dev                    # dpkg-shlibdeps: the .deb's library dependencies
    rpm                         # rpmbuild: the .rpm
    systemd                     # systemd-analyze verify: the packaged units; the systemd
                                # cgroup driver tests run it in namespaces of its own
    util-linux                  # unshare, nsenter: those namespaces
    procps                      # pgrep: finding systemd in them
    init-system-helpers         # deb-systemd-helper: the .deb's maintainer scripts
)
missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
              -o Dpkg::Use-Pty=0 --no-install-recommends)
    timeout 600 apt-get update -q </dev/null
    timeout 1200 apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null
else
    log "all packages present"
fi

# Debian's containerd package starts a system containerd where an init system runs. rkubelet's
# scripts run their own instances and never use /run/containerd; nothing to do about it here.

for tool in containerd ctr runc ip busybox; do
    command -v "$tool" >/dev/null || { echo "host-setup: '$tool' still missing" >&2; exit 1; }
done
for plugin in bridge host-local portmap loopback; do
    [[ -x "/usr/lib/cni/$plugin" ]] || { echo "host-setup: /usr/lib/cni/$plugin missing" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# Local test images
# ---------------------------------------------------------------------------------------------
builder="$script_dir/images/build-images.sh"
# The images depend only on the busybox binary and the builder: a stamp of both their digests
# tells whether the tarballs are current.
stamp_file="$images_dir/.inputs.sha256"
stamp="$(sha256sum /bin/busybox "$builder" | cut -d' ' -f1 | tr '\n' ' ')"
rebuild=0
[[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] || rebuild=1
for f in pause-3.6.tar busybox-local.tar busybox-other.tar gc-victim.tar; do
    [[ -s "$images_dir/$f" ]] || rebuild=1
done
if ((rebuild)); then
    log "building test images into $images_dir"
    bash "$builder" "$images_dir"
    echo "$stamp" >"$stamp_file"
else
    log "test images up to date in $images_dir"
fi
