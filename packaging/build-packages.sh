#!/usr/bin/env bash
# Builds rkubelet's packages: rkubelet_<version>_<arch>.deb and rkubelet-<version>-1.<arch>.rpm.
#
#  1. The binary: `cargo build --release` (statically linked), or the one RKUBELET_BINARY
#     names. Its `--version` line gives the package version and the Kubernetes version the
#     packages provide (Kubernetes v1.33.0+rkubelet-0.1.0: kubelet 1.33.0, rkubelet 0.1.0). It
#     is stripped into the staged trees; the input is left as it is.
#  2. One staged tree per format, the same files at each format's paths:
#       /usr/bin/rkubelet (0755), /usr/bin/kubelet -> rkubelet
#       <unit dir>/kubelet.service, <unit dir>/kubelet.service.d/09-rkubelet-kubeadm.conf,
#       <unit dir>/rkubelet.service    (unit dir: /lib/systemd/system on Debian 12, the
#                                       kubelet package's path; /usr/lib/systemd/system in rpm)
#       /etc/default/kubelet (.deb) or /etc/sysconfig/kubelet (.rpm): KUBELET_EXTRA_ARGS=
#       /etc/rkubelet/config.yaml, /usr/share/man/man8/rkubelet.8.gz
#       /etc/kubernetes/manifests/ (not /var/lib/kubelet: rkubelet makes it at start, and a
#       package that does not own it can never remove it)
#  3. The .deb with dpkg-deb from that tree plus packaging/debian/ (control template,
#     conffiles, maintainer scripts); shared-library dependencies, if the binary is linked
#     dynamically, from dpkg-shlibdeps.
#  4. The .rpm with rpmbuild and packaging/rpm/rkubelet.spec.
#
# Why these tools: dpkg-deb, dpkg-shlibdeps (dpkg-dev) and rpmbuild (Debian's `rpm` package)
# are the formats' own tools, maintained by the distribution and installed with apt (here when
# missing, or by packaging/host-setup.sh): no packaging crate, nothing downloaded at build
# time beyond Debian packages, and no debhelper source package to keep in step with a build
# that cargo already does.
#
# Usage: packaging/build-packages.sh [OUTPUT_DIR]
#   OUTPUT_DIR  where the two packages go (default: target/packages in the repository, also
#               when CARGO_TARGET_DIR points elsewhere, so a shared build directory never
#               receives one checkout's packages); printed on stdout, one path a line.
# Environment:
#   RKUBELET_BINARY   package this rkubelet binary (built for this machine's architecture)
#                     instead of building one
#   CARGO_TARGET_DIR  cargo's build directory (default: target/ in the repository)
# Needs: cargo (unless RKUBELET_BINARY); dpkg-deb, dpkg-shlibdeps, rpmbuild, strip, readelf and gzip,
# installed with apt where missing (which needs root).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg_dir="$repo_root/packaging"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
out_dir="${1:-$repo_root/target/packages}"

log() { echo "build-packages: $*" >&2; }
die() { echo "build-packages: $*" >&2; exit 1; }

# The build tools come from the distribution: a tool that is missing is installed with apt
# (as root, without questions), so that a fresh Debian machine needs nothing set up by hand.
# tool:package
tools=(dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev rpmbuild:rpm strip:binutils readelf:binutils gzip:gzip)
missing=()
for entry in "${tools[@]}"; do
    command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
done
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing Debian packages ${missing[*]}; install them or run as root"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q </dev/null >&2
    timeout 1200 apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 \
        "${missing[@]}" </dev/null >&2
    for entry in "${tools[@]}"; do
        command -v "${entry%%:*}" >/dev/null || die "'${entry%%:*}' still missing after installing ${entry#*:}"
    done
fi

# ---------------------------------------------------------------------------------------------
# The binary and the versions
# ---------------------------------------------------------------------------------------------
if [[ -n "${RKUBELET_BINARY:-}" ]]; then
    binary="$RKUBELET_BINARY"
else
    log "cargo build --release"
    (cd "$repo_root" && cargo build --release --bin rkubelet </dev/null) >&2
    # Builds name their target (.cargo/config.toml), so the output is under the host triple.
    host="$(rustc -vV | sed -n 's/^host: //p')"
    binary="$target_dir/$host/release/rkubelet"
fi
[[ -x "$binary" ]] || die "$binary is not an executable file"

version_line="$("$binary" --version)"
if [[ ! "$version_line" =~ ^Kubernetes\ v([0-9]+\.[0-9]+\.[0-9]+)\+rkubelet-([0-9A-Za-z.~]+)$ ]]; then
    die "unexpected --version output from $binary: '$version_line'"
fi
kube_version="${BASH_REMATCH[1]}"
version="${BASH_REMATCH[2]}"
deb_arch="$(dpkg --print-architecture)"
rpm_arch="$(rpm --eval '%{_arch}')"
log "rkubelet $version (kubelet $kube_version), $deb_arch / $rpm_arch"

work="$(mktemp -d /tmp/rkubelet-packages.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"

# stage ROOT UNIT_DIR ENV_FILE: the files both formats install, at one format's paths.
stage() {
    local root="$1" unit_dir="$2" env_file="$3" unit
    install -d -m 0755 "$root/usr/bin" "$root$unit_dir/kubelet.service.d" \
        "$root/etc/rkubelet" "$root$(dirname "$env_file")" "$root/usr/share/man/man8" \
        "$root/etc/kubernetes/manifests"
    strip --strip-unneeded -o "$root/usr/bin/rkubelet" "$binary"
    chmod 0755 "$root/usr/bin/rkubelet"
    ln -s rkubelet "$root/usr/bin/kubelet"
    for unit in kubelet.service rkubelet.service; do
        sed "s#@ENV_FILE@#$env_file#g" "$pkg_dir/systemd/$unit" >"$root$unit_dir/$unit"
    done
    sed "s#@ENV_FILE@#$env_file#g" "$pkg_dir/systemd/09-rkubelet-kubeadm.conf" \
        >"$root$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf"
    # Byte for byte the kubelet package's file: when rkubelet takes it over (or the kubelet
    # package takes it back) an administrator's edits are kept without a question.
    install -m 0644 "$pkg_dir/systemd/kubelet.env" "$root$env_file"
    install -m 0644 "$pkg_dir/config.yaml" "$root/etc/rkubelet/config.yaml"
    gzip -9n <"$pkg_dir/man/rkubelet.8" >"$root/usr/share/man/man8/rkubelet.8.gz"
    find "$root" -type f ! -path "$root/usr/bin/rkubelet" -exec chmod 0644 {} +
    find "$root" -type d -exec chmod 0755 {} +
}

# ---------------------------------------------------------------------------------------------
# .deb
# ---------------------------------------------------------------------------------------------
# dpkg-shlibdeps wants the debhelper layout: debian/control and the tree in debian/<package>.
deb_work="$work/deb"
deb_root="$deb_work/debian/rkubelet"
stage "$deb_root" /lib/systemd/system /etc/default/kubelet
install -d -m 0755 "$deb_root/DEBIAN"
printf 'Source: rkubelet\n\nPackage: rkubelet\nArchitecture: any\n' >"$deb_work/debian/control"
# The default build is statically linked (.cargo/config.toml) and needs no shared library;
# a dynamically linked RKUBELET_BINARY gets its library dependencies from dpkg-shlibdeps.
if readelf -d "$deb_root/usr/bin/rkubelet" | grep -q '(NEEDED)'; then
    shlibs="$(cd "$deb_work" && dpkg-shlibdeps -O -e debian/rkubelet/usr/bin/rkubelet)"
    shlibs="${shlibs#shlibs:Depends=}"
    [[ -n "$shlibs" ]] || die "dpkg-shlibdeps found no shared-library dependencies"
    shlibs="$shlibs, "
else
    log "$binary is statically linked: no shared-library dependencies"
    shlibs=""
fi

installed_size="$(du -sk --exclude=DEBIAN "$deb_root" | cut -f1)"
sed -e "s#@VERSION@#$version#" -e "s#@ARCH@#$deb_arch#" -e "s#@KUBE_VERSION@#$kube_version#" \
    -e "s#@INSTALLED_SIZE@#$installed_size#" -e "s#@SHLIBS_DEPENDS@, #$shlibs#" \
    "$pkg_dir/debian/control" >"$deb_root/DEBIAN/control"
install -m 0644 "$pkg_dir/debian/conffiles" "$deb_root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$pkg_dir/debian/$script" "$deb_root/DEBIAN/$script"
done
(cd "$deb_root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) >"$deb_root/DEBIAN/md5sums"
chmod 0644 "$deb_root/DEBIAN/md5sums"

deb_file="$out_dir/rkubelet_${version}_${deb_arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$deb_root" "$deb_file" >&2

# ---------------------------------------------------------------------------------------------
# .rpm
# ---------------------------------------------------------------------------------------------
rpm_root="$work/rpm/stage"
stage "$rpm_root" /usr/lib/systemd/system /etc/sysconfig/kubelet
rpmbuild -bb --quiet --target "$rpm_arch" \
    --define "_topdir $work/rpm/top" \
    --define "_rpmdir $work/rpm/out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "rkubelet_version $version" \
    --define "kube_version $kube_version" \
    --define "stage $rpm_root" \
    "$pkg_dir/rpm/rkubelet.spec" >&2
rpm_file="$out_dir/rkubelet-${version}-1.${rpm_arch}.rpm"
mv "$work/rpm/out/rkubelet-${version}-1.${rpm_arch}.rpm" "$rpm_file"

echo "$deb_file"
echo "$rpm_file"
