#!/usr/bin/env bash
# Checks the packages packaging/build-packages.sh made, on this machine, as root:
#
#  .deb  installed with `dpkg -i`: every file at its path with its mode, the binary stripped,
#        /usr/bin/kubelet a link to it, the conffiles marked, the units passing
#        `systemd-analyze verify`, `rkubelet --version` and `kubelet --version` naming
#        Kubernetes v1.33, no kubelet started by the installation and rkubelet.service not
#        enabled; then purged: every file gone, the enablement links gone, and what was in
#        /var/lib/kubelet left as it was.
#  .rpm  not installed (this is a Debian host): its file list (`rpm -qlp`) is exactly the
#        expected one, the binary's mode, the config files, and that it provides and
#        conflicts with kubelet.
#
# Usage: packaging/check-packages.sh DEB RPM
# Refuses to run where a kubelet package is installed: it would replace the host's kubelet.
# Every failed check is reported with the file it concerns; the exit status is 1 if any failed.
set -euo pipefail

deb="${1:?usage: check-packages.sh DEB RPM}"
rpm_file="${2:?usage: check-packages.sh DEB RPM}"
[[ -f "$deb" ]] || { echo "check-packages: $deb: no such file" >&2; exit 1; }
[[ -f "$rpm_file" ]] || { echo "check-packages: $rpm_file: no such file" >&2; exit 1; }
if [[ $EUID -ne 0 ]]; then
    echo "check-packages: must run as root (it installs and purges the .deb)" >&2
    exit 1
fi

failures=0
ok() { echo "  ok: $*"; }
fail() { echo "  FAILED: $*"; failures=$((failures + 1)); }
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }

if installed kubelet; then
    echo "check-packages: the kubelet package is installed on this machine; refusing to replace it" >&2
    exit 1
fi

unit_dir=/lib/systemd/system
wants=/etc/systemd/system/multi-user.target.wants
# path, type (f file, l link, d directory), mode
deb_files=(
    "/usr/bin/rkubelet f 755"
    "/usr/bin/kubelet l -"
    "$unit_dir/kubelet.service f 644"
    "$unit_dir/kubelet.service.d d 755"
    "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf f 644"
    "$unit_dir/rkubelet.service f 644"
    "/etc/default/kubelet f 644"
    "/etc/rkubelet d 755"
    "/etc/rkubelet/config.yaml f 644"
    "/etc/kubernetes d 755"
    "/etc/kubernetes/manifests d 755"
    "/usr/share/man/man8/rkubelet.8.gz f 644"
)
conffiles=(/etc/default/kubelet /etc/rkubelet/config.yaml)

# A clean start: an earlier run's package goes first.
if installed rkubelet || dpkg-query -W rkubelet >/dev/null 2>&1; then
    echo "purging an earlier rkubelet package"
    dpkg --purge rkubelet >/dev/null
fi

# /var/lib/kubelet holds a node's pods, certificates and kubeadm's files: the package must
# never touch it. A marker in it is checked after the purge.
made_state_dir=false
if [[ ! -d /var/lib/kubelet ]]; then
    mkdir -p /var/lib/kubelet
    made_state_dir=true
fi
marker="/var/lib/kubelet/.check-packages-$$"
echo "left alone" >"$marker"
cleanup() {
    rm -f "$marker"
    if $made_state_dir; then rmdir /var/lib/kubelet 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== the .deb: $deb"
echo "-- dpkg -i"
if dpkg -i "$deb"; then ok "installed"; else fail "dpkg -i $deb"; exit 1; fi

echo "-- files and modes"
for entry in "${deb_files[@]}"; do
    read -r path kind mode <<<"$entry"
    case "$kind" in
    f) [[ -f "$path" && ! -L "$path" ]] || { fail "$path: not a regular file"; continue; } ;;
    d) [[ -d "$path" && ! -L "$path" ]] || { fail "$path: not a directory"; continue; } ;;
    l) [[ -L "$path" ]] || { fail "$path: not a symbolic link"; continue; } ;;
    esac
    if [[ "$mode" != - ]]; then
        actual="$(stat -c '%a %U:%G' "$path")"
        [[ "$actual" == "$mode root:root" ]] || { fail "$path: mode/owner $actual, want $mode root:root"; continue; }
    fi
    ok "$path"
done
[[ "$(readlink /usr/bin/kubelet)" == rkubelet ]] || fail "/usr/bin/kubelet: links to $(readlink /usr/bin/kubelet), want rkubelet"
if readelf -S /usr/bin/rkubelet | grep -q '\.symtab'; then
    fail "/usr/bin/rkubelet: not stripped (has .symtab)"
else
    ok "/usr/bin/rkubelet is stripped"
fi

echo "-- the package's file list is exactly the expected one"
expected="$(for e in "${deb_files[@]}"; do echo "${e%% *}"; done | sort)"
# dpkg -L also lists the parent directories (/., /usr, /etc, ...); keep what lies below them.
listed="$(dpkg -L rkubelet | grep -Ev '^/\.$|^/(usr|usr/bin|usr/share|usr/share/man|usr/share/man/man8|etc|etc/default|lib|lib/systemd|lib/systemd/system)$' | sort)"
if [[ "$listed" == "$expected" ]]; then
    ok "dpkg -L rkubelet"
else
    fail "dpkg -L rkubelet differs from the expected list:"
    diff <(echo "$expected") <(echo "$listed") || true
fi

echo "-- conffiles"
marked="$(dpkg-query -W -f='${Conffiles}\n' rkubelet | awk 'NF {print $1}' | sort)"
want="$(printf '%s\n' "${conffiles[@]}" | sort)"
[[ "$marked" == "$want" ]] && ok "conffiles: $(echo $marked)" || fail "conffiles are '$(echo $marked)', want '$(echo $want)'"

echo "-- systemd-analyze verify"
verify_log="$(mktemp)"
if systemd-analyze verify "$unit_dir/kubelet.service" "$unit_dir/rkubelet.service" >"$verify_log" 2>&1 \
    && ! grep -Ei 'unknown|invalid|failed|bad|ignoring' "$verify_log" >/dev/null; then
    ok "kubelet.service (with 09-rkubelet-kubeadm.conf) and rkubelet.service"
else
    fail "systemd-analyze verify:"
    cat "$verify_log"
fi
rm -f "$verify_log"
# The drop-in is part of the unit systemd sees: its ExecStart reads kubeadm's files.
if systemd-analyze cat-config "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf" 2>/dev/null \
    | grep -q 'KUBELET_KUBEADM_ARGS'; then
    ok "the kubeadm drop-in passes KUBELET_KUBEADM_ARGS"
else
    fail "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf: no KUBELET_KUBEADM_ARGS"
fi

echo "-- --version"
for bin in /usr/bin/rkubelet /usr/bin/kubelet; do
    line="$("$bin" --version 2>&1 || true)"
    if [[ "$line" =~ ^Kubernetes\ v1\.33\.[0-9]+\+rkubelet- ]]; then
        ok "$bin --version: $line"
    else
        fail "$bin --version printed '$line'"
    fi
done

echo "-- nothing started, rkubelet.service not enabled"
if pgrep -x kubelet >/dev/null || pgrep -x rkubelet >/dev/null; then
    fail "a kubelet process runs after the installation: $(pgrep -a -x kubelet; pgrep -a -x rkubelet)"
else
    ok "no kubelet process"
fi
[[ ! -e "$wants/rkubelet.service" ]] && ok "rkubelet.service not enabled" || fail "$wants/rkubelet.service exists"
[[ -L "$wants/kubelet.service" ]] && ok "kubelet.service enabled, as the kubelet package does" \
    || fail "$wants/kubelet.service missing: kubeadm's preflight wants kubelet.service enabled"

echo "-- dpkg --purge"
if dpkg --purge rkubelet; then ok "purged"; else fail "dpkg --purge rkubelet"; fi
for entry in "${deb_files[@]}"; do
    path="${entry%% *}"
    # A directory another package also owns may stay; ours are all gone when empty.
    if [[ -e "$path" || -L "$path" ]] && ! [[ -d "$path" && -n "$(ls -A "$path")" ]]; then
        fail "$path left after the purge"
    fi
done
[[ ! -e "$wants/kubelet.service" && ! -e "$wants/rkubelet.service" ]] && ok "enablement links removed" \
    || fail "enablement links left in $wants"
[[ "$(cat "$marker" 2>/dev/null)" == "left alone" ]] && ok "/var/lib/kubelet left as it was" \
    || fail "$marker was changed or removed by the purge"

echo "== the .rpm: $rpm_file"
rpm_expected="$(printf '%s\n' /usr/bin/rkubelet /usr/bin/kubelet \
    /usr/lib/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service.d \
    /usr/lib/systemd/system/kubelet.service.d/09-rkubelet-kubeadm.conf \
    /usr/lib/systemd/system/rkubelet.service /etc/sysconfig/kubelet /etc/rkubelet \
    /etc/rkubelet/config.yaml /etc/kubernetes /etc/kubernetes/manifests \
    /usr/share/man/man8/rkubelet.8.gz | sort)"
rpm_listed="$(rpm -qlp "$rpm_file" 2>/dev/null | sort)"
if [[ "$rpm_listed" == "$rpm_expected" ]]; then
    ok "rpm -qlp"
else
    fail "rpm -qlp differs from the expected list:"
    diff <(echo "$rpm_expected") <(echo "$rpm_listed") || true
fi
rpm_config="$(rpm -qcp "$rpm_file" 2>/dev/null | sort | xargs)"
[[ "$rpm_config" == "/etc/rkubelet/config.yaml /etc/sysconfig/kubelet" ]] && ok "config files: $rpm_config" \
    || fail "rpm config files are '$rpm_config'"
# --dump: path size mtime digest mode owner group ...
binary_mode="$(rpm -qp --dump "$rpm_file" 2>/dev/null | awk '$1 == "/usr/bin/rkubelet" {print $5, $6, $7}')"
[[ "$binary_mode" == "0100755 root root" ]] && ok "/usr/bin/rkubelet: $binary_mode" \
    || fail "/usr/bin/rkubelet in the rpm: '$binary_mode', want '0100755 root root'"
rpm -qp --provides "$rpm_file" 2>/dev/null | grep -Eq '^kubelet = 1\.33\.' && ok "provides kubelet = 1.33" \
    || fail "the rpm does not provide kubelet = 1.33.x"
rpm -qp --conflicts "$rpm_file" 2>/dev/null | grep -qx kubelet && ok "conflicts with kubelet" \
    || fail "the rpm does not conflict with kubelet"

if ((failures)); then
    echo "check-packages: $failures check(s) FAILED"
    exit 1
fi
echo "check-packages: all checks passed"
