#!/usr/bin/env bash
# Checks the packages packaging/build-packages.sh made, on this machine, as root:
#
#  .deb  installed with `dpkg -i`: every file at its path with its mode and owner, the binary
#        stripped (no .symtab), /usr/bin/kubelet a link to it, exactly the expected file list,
#        the conffiles marked (`dpkg-query -W -f='${Conffiles}'`), the units passing
#        `systemd-analyze verify`, `rkubelet --version` and `kubelet --version` naming
#        Kubernetes v1.33, and on this unconfigured node no kubelet started and neither unit
#        enabled; then purged: every file gone, no enablement link left, and what was in
#        /var/lib/kubelet before the installation left as it was.
#  .rpm  not installed (this is a Debian host): its file list (`rpm -qlp`) is exactly the
#        expected one, the binary's mode, the config files, what it requires, and that it
#        provides and conflicts with kubelet.
#  Both  the C library among the dependencies exactly when the binary is linked dynamically
#        (the default build is static).
#
# Usage: packaging/check-packages.sh DEB RPM
# The host comes first: where a kubelet is installed or configured (the kubelet package, a
# kubelet binary or unit no package owns, kubeadm's /var/lib/kubelet/config.yaml, or an rkubelet
# package that runs a node), the .deb is not installed and that is said on stdout; the .rpm is
# still checked. Tools that are missing (systemd-analyze, readelf, rpm) are installed with apt.
# Every failed check names the file it concerns; the exit status is 1 if any failed.
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
# expect DESCRIPTION_OK DESCRIPTION_FAILED COMMAND...: ok or fail after the command's status.
expect() {
    local good="$1" bad="$2"
    shift 2
    if "$@"; then ok "$good"; else fail "$bad"; fi
}
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }
known() { dpkg-query -W "$1" >/dev/null 2>&1; }
owner() { dpkg-query -S "$1" 2>/dev/null | cut -d: -f1 || true; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
# command:package
tools=(systemd-analyze:systemd readelf:binutils rpm:rpm deb-systemd-helper:init-system-helpers)
missing=()
for entry in "${tools[@]}"; do
    command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q </dev/null
    timeout 1200 apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" </dev/null
fi

# One check at a time on this machine: two would install and purge the same package.
exec 9>/run/lock/rkubelet-check-packages.lock
flock -w 300 9 || { echo "check-packages: another check holds /run/lock/rkubelet-check-packages.lock" >&2; exit 1; }

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

# Processes running the installed binary (tests elsewhere on the machine may run other copies).
installed_kubelets() {
    local exe pid
    for exe in /proc/[0-9]*/exe; do
        [[ "$(readlink "$exe" 2>/dev/null)" == /usr/bin/rkubelet ]] || continue
        pid="${exe#/proc/}"
        echo "${pid%/exe}"
    done
}

# ---------------------------------------------------------------------------------------------
# The host: never replace or remove a kubelet this check did not install
# ---------------------------------------------------------------------------------------------
skip_reason=""
if known kubelet && [[ "$(dpkg-query -W -f='${Status}' kubelet)" != *not-installed ]]; then
    skip_reason="the kubelet package is on this machine ($(dpkg-query -W -f='${Status}' kubelet))"
elif [[ -e /var/lib/kubelet/config.yaml ]]; then
    skip_reason="/var/lib/kubelet/config.yaml exists: this machine is a configured (kubeadm) node"
elif [[ -n "$(installed_kubelets)" ]]; then
    skip_reason="/usr/bin/rkubelet runs here (pid $(installed_kubelets | xargs))"
else
    for path in /usr/bin/kubelet /etc/default/kubelet "$unit_dir/kubelet.service" \
        /usr/lib/systemd/system/kubelet.service /etc/systemd/system/kubelet.service; do
        if [[ -e "$path" || -L "$path" ]] && [[ "$(owner "$path")" != rkubelet ]]; then
            skip_reason="$path exists and is not rkubelet's (owner: $(owner "$path" | grep . || echo none))"
            break
        fi
    done
fi

if [[ -n "$skip_reason" ]]; then
    echo "== the .deb: SKIPPED, not installed: $skip_reason"
    echo "   (installing it would replace that kubelet; run this check on a machine without one)"
else
    # An earlier run's package (this check purges what it installs; a run that was killed may not).
    if known rkubelet; then
        echo "purging an earlier rkubelet package"
        dpkg --purge rkubelet >/dev/null
    fi

    # /var/lib/kubelet holds a node's pods, certificates and kubeadm's files: the package must
    # never touch it. A marker written before the installation is checked after the purge.
    made_state_dir=false
    if [[ ! -d /var/lib/kubelet ]]; then
        mkdir -p /var/lib/kubelet
        made_state_dir=true
    fi
    marker="/var/lib/kubelet/.check-packages-$$"
    echo "left alone" >"$marker"
    # shellcheck disable=SC2317  # called through the EXIT trap
    cleanup() {
        rm -f "$marker"
        if $made_state_dir; then rmdir /var/lib/kubelet 2>/dev/null || true; fi
    }
    trap cleanup EXIT

    echo "== the .deb: $deb"
    echo "-- dpkg -i"
    if dpkg -i "$deb" </dev/null; then ok "installed"; else fail "dpkg -i $deb"; exit 1; fi

    echo "-- files, modes and owners"
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
    target="$(readlink /usr/bin/kubelet || true)"
    expect "/usr/bin/kubelet -> rkubelet" "/usr/bin/kubelet links to '$target', want rkubelet" \
        test "$target" = rkubelet
    if readelf -S /usr/bin/rkubelet | grep -q '\.symtab'; then
        fail "/usr/bin/rkubelet: not stripped (it has a .symtab section)"
    else
        ok "/usr/bin/rkubelet is stripped (no .symtab)"
    fi

    echo "-- the package's file list is exactly the expected one"
    expected="$(for e in "${deb_files[@]}"; do echo "${e%% *}"; done | sort)"
    # dpkg -L also lists the parent directories (/., /usr, /etc, ...); keep what lies below them.
    listed="$(dpkg -L rkubelet | grep -Ev '^/\.$|^/(usr|usr/bin|usr/share|usr/share/man|usr/share/man/man8|etc|etc/default|lib|lib/systemd|lib/systemd/system)$' | sort)"
    if [[ "$listed" == "$expected" ]]; then
        ok "dpkg -L rkubelet"
    else
        fail "dpkg -L rkubelet differs from the expected list (< expected, > listed):"
        diff <(echo "$expected") <(echo "$listed") || true
    fi
    if dpkg -L rkubelet | grep -qx '/var/lib/kubelet'; then
        fail "/var/lib/kubelet is in the package: a purge could remove it"
    else
        ok "/var/lib/kubelet is not the package's"
    fi

    echo "-- conffiles"
    marked="$(dpkg-query -W --showformat='${Conffiles}\n' rkubelet | awk 'NF {print $1}' | sort | xargs)"
    want="$(printf '%s\n' "${conffiles[@]}" | sort | xargs)"
    expect "conffiles: $marked" "conffiles are '$marked', want '$want'" test "$marked" = "$want"

    echo "-- systemd-analyze verify"
    # Offline: no running systemd is needed. It loads each unit with its drop-ins, checks
    # that ExecStart's binary is executable and that the Documentation= man page exists.
    verify_log="$(mktemp)"
    if systemd-analyze verify "$unit_dir/kubelet.service" "$unit_dir/rkubelet.service" >"$verify_log" 2>&1 \
        && ! grep -Eqi 'unknown|invalid|failed|bad|ignoring|not executable' "$verify_log"; then
        ok "$unit_dir/kubelet.service (with 09-rkubelet-kubeadm.conf) and $unit_dir/rkubelet.service"
    else
        fail "systemd-analyze verify of $unit_dir/kubelet.service and $unit_dir/rkubelet.service:"
        sed 's/^/    /' "$verify_log"
    fi
    rm -f "$verify_log"
    # The drop-in is part of the unit systemd loads, and its command line reads kubeadm's files.
    exec_start="$(systemd-analyze cat-config "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf" 2>/dev/null \
        | grep '^ExecStart=/' || true)"
    for var in KUBELET_KUBECONFIG_ARGS KUBELET_CONFIG_ARGS KUBELET_KUBEADM_ARGS KUBELET_EXTRA_ARGS; do
        expect "the kubeadm drop-in passes \$$var" \
            "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf: ExecStart lacks \$$var" \
            grep -q "\$$var" <<<"$exec_start"
    done
    for file in /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet; do
        expect "the kubeadm drop-in reads $file" \
            "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf: no EnvironmentFile=-$file" \
            grep -qx "EnvironmentFile=-$file" "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf"
    done
    expect "the kubeadm drop-in passes --config=/var/lib/kubelet/config.yaml" \
        "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf: no --config=/var/lib/kubelet/config.yaml" \
        grep -q -- '--config=/var/lib/kubelet/config.yaml' "$unit_dir/kubelet.service.d/09-rkubelet-kubeadm.conf"
    for unit in kubelet.service rkubelet.service; do
        expect "$unit_dir/$unit: Type=notify" "$unit_dir/$unit: not Type=notify" \
            grep -qx 'Type=notify' "$unit_dir/$unit"
    done

    echo "-- --version"
    for bin in /usr/bin/rkubelet /usr/bin/kubelet; do
        line="$("$bin" --version 2>&1 || true)"
        expect "$bin --version: $line" "$bin --version printed '$line', want 'Kubernetes v1.33.<patch>+rkubelet-<version>'" \
            grep -Eqx 'Kubernetes v1\.33\.[0-9]+\+rkubelet-.+' <<<"$line"
    done

    echo "-- on an unconfigured node nothing is started or enabled"
    running="$(installed_kubelets | xargs)"
    expect "no process runs /usr/bin/rkubelet" "/usr/bin/rkubelet runs after the installation (pid $running)" \
        test -z "$running"
    for unit in kubelet.service rkubelet.service; do
        expect "$unit not enabled" "$wants/$unit exists: the installation enabled $unit" \
            test ! -e "$wants/$unit" -a ! -L "$wants/$unit"
    done

    echo "-- dpkg --purge"
    if dpkg --purge rkubelet </dev/null; then ok "purged"; else fail "dpkg --purge rkubelet"; fi
    expect "the package is gone from dpkg's database" "rkubelet is still known to dpkg after the purge" \
        test -z "$(dpkg-query -W -f='${Status}' rkubelet 2>/dev/null || true)"
    left=0
    for entry in "${deb_files[@]}"; do
        path="${entry%% *}"
        # A directory that holds files of someone else stays; the package's own are gone.
        if [[ -e "$path" || -L "$path" ]] && ! [[ -d "$path" && -n "$(ls -A "$path")" ]]; then
            fail "$path left after the purge"
            left=$((left + 1))
        fi
    done
    ((left)) || ok "the package's files are gone"
    for unit in kubelet.service rkubelet.service; do
        expect "no $wants/$unit" "$wants/$unit left after the purge" \
            test ! -e "$wants/$unit" -a ! -L "$wants/$unit"
    done
    expect "/var/lib/kubelet left as it was ($marker)" "$marker was changed or removed by the purge" \
        test "$(cat "$marker" 2>/dev/null)" = "left alone"
fi

# ---------------------------------------------------------------------------------------------
# The .rpm
# ---------------------------------------------------------------------------------------------
echo "== the binary's dependencies"
# The binary both packages carry (the same build), taken from the .deb without installing it.
packaged_binary="$(mktemp /tmp/rkubelet-packaged.XXXXXX)"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/rkubelet >"$packaged_binary"
depends="$(dpkg-deb -f "$deb" Depends)"
if readelf -d "$packaged_binary" | grep -q '(NEEDED)'; then
    expect "dynamically linked; the .deb depends on libc6" "$deb does not depend on libc6 (Depends: $depends)" \
        grep -Eq '(^|, )libc6( |,|$)' <<<"$depends"
else
    expect "statically linked; the .deb depends on no library package" \
        "$deb depends on libc6 although its binary is static (Depends: $depends)" \
        test -z "$(grep -E '(^|, )libc6( |,|$)' <<<"$depends" || true)"
fi

echo "== the .rpm: $rpm_file"
rpm_expected="$(printf '%s\n' /usr/bin/rkubelet /usr/bin/kubelet \
    /usr/lib/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service.d \
    /usr/lib/systemd/system/kubelet.service.d/09-rkubelet-kubeadm.conf \
    /usr/lib/systemd/system/rkubelet.service /etc/sysconfig/kubelet /etc/rkubelet \
    /etc/rkubelet/config.yaml /etc/kubernetes /etc/kubernetes/manifests \
    /usr/share/man/man8/rkubelet.8.gz | sort)"
rpm_listed="$(rpm -qlp "$rpm_file" 2>/dev/null | sort)"
if [[ "$rpm_listed" == "$rpm_expected" ]]; then
    ok "rpm -qlp: $(wc -l <<<"$rpm_listed") paths as expected"
else
    fail "rpm -qlp $rpm_file differs from the expected list (< expected, > listed):"
    diff <(echo "$rpm_expected") <(echo "$rpm_listed") || true
fi
rpm_config="$(rpm -qcp "$rpm_file" 2>/dev/null | sort | xargs)"
expect "config files: $rpm_config" "rpm config files are '$rpm_config', want /etc/rkubelet/config.yaml /etc/sysconfig/kubelet" \
    test "$rpm_config" = "/etc/rkubelet/config.yaml /etc/sysconfig/kubelet"
# --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
dump="$(rpm -qp --dump "$rpm_file" 2>/dev/null)"
binary_mode="$(awk '$1 == "/usr/bin/rkubelet" {print $5, $6, $7}' <<<"$dump")"
expect "/usr/bin/rkubelet: $binary_mode" "/usr/bin/rkubelet in the rpm: '$binary_mode', want '0100755 root root'" \
    test "$binary_mode" = "0100755 root root"
link="$(awk '$1 == "/usr/bin/kubelet" {print $11}' <<<"$dump")"
expect "/usr/bin/kubelet -> $link" "/usr/bin/kubelet in the rpm links to '$link', want rkubelet" test "$link" = rkubelet
for unit in kubelet.service rkubelet.service kubelet.service.d/09-rkubelet-kubeadm.conf; do
    mode="$(awk -v p="/usr/lib/systemd/system/$unit" '$1 == p {print $5}' <<<"$dump")"
    expect "/usr/lib/systemd/system/$unit: $mode" "/usr/lib/systemd/system/$unit in the rpm: mode '$mode', want 0100644" \
        test "$mode" = 0100644
done
provides="$(rpm -qp --provides "$rpm_file" 2>/dev/null)"
expect "provides kubelet = 1.33" "$rpm_file does not provide kubelet = 1.33.x (provides: $(xargs <<<"$provides"))" \
    grep -Eq '^kubelet = 1\.33\.' <<<"$provides"
expect "conflicts with kubelet" "$rpm_file does not conflict with kubelet" \
    grep -qx kubelet < <(rpm -qp --conflicts "$rpm_file" 2>/dev/null)
requires="$(rpm -qp --requires "$rpm_file" 2>/dev/null)"
# The C library is required exactly when the packaged binary is linked dynamically (the
# default build is static, see .cargo/config.toml).
needs=(iptables iproute util-linux)
if readelf -d "$packaged_binary" | grep -q '(NEEDED)'; then
    needs+=('libc\.so\.6')
else
    expect "no shared-library requirement (static binary)" \
        "$rpm_file requires shared libraries for a static binary: $(grep -E '\.so' <<<"$requires" | xargs)" \
        test -z "$(grep -E '\.so' <<<"$requires" || true)"
fi
for need in "${needs[@]}"; do
    expect "requires $need" "$rpm_file does not require $need (requires: $(xargs <<<"$requires"))" \
        grep -Eq "^$need" <<<"$requires"
done
# rpmbuild adds its own dependencies; none may point into the build machine's tree.
expect "no requirement names a build path" "$rpm_file requires a build path: $(grep -E '/(tmp|var/tmp|root)/' <<<"$requires" | xargs)" \
    test -z "$(grep -E '/(tmp|var/tmp|root)/' <<<"$requires" || true)"

rm -f "$packaged_binary"

if ((failures)); then
    echo "check-packages: $failures check(s) FAILED"
    exit 1
fi
if [[ -n "$skip_reason" ]]; then
    echo "check-packages: the .rpm's checks passed; the .deb was not installed ($skip_reason)"
else
    echo "check-packages: all checks passed"
fi
