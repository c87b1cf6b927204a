#!/usr/bin/env bash
# rkubelet's test command, run as root: `tests/run.sh` (CI runs exactly this through .ci/run).
#
# Steps, each under its own header:
#   1. host set-up        packaging/host-setup.sh (Debian packages, local test images)
#   2. toolchain          rustfmt and clippy present; CARGO_TARGET_DIR=/var/tmp/rkubelet-target
#                         unless already set, so builds are reused between runs; with
#                         little disk left, old test binaries and incremental caches go first
#   3. cargo fmt --all -- --check
#   4. cargo clippy --all-targets -- -D warnings
#   5. a private containerd  packaging/containerd.sh start /var/tmp/rkubelet-ci/containerd
#   6. cargo test --no-fail-fast --all-targets -- --include-ignored (every test binary runs,
#      also after one failed, so the closing count covers the whole suite)
#      with RKUBELET_E2E=1 and RKUBELET_E2E_CRI_ENDPOINT=unix://<its socket>, so the e2e tests
#      (#[ignore] by default) run against the real runtime
#   7. packages           packaging/build-packages.sh (release build, .deb and .rpm), then
#                         packaging/check-packages.sh: dpkg -i, files, modes, conffiles,
#                         systemd-analyze verify, --version, dpkg --purge; rpm -qlp (the .deb
#                         is not installed where a kubelet is: the check says so and goes on)
#   8. fuzz smoke         tests/fuzz/run.sh: every fuzz target under AFL++ for
#                         $RKUBELET_FUZZ_SECONDS (default 15) seconds on its corpus; a crash
#                         or hang fails the run (cargo-afl and AFL++ are installed on first use)
# containerd is always stopped at exit (trap), also on failure or Ctrl-C.
# Every step runs even if an earlier check failed; the exit status is non-zero if any failed
# (the tests' own status when they failed). Needs root, no stdin, works with CI=true.
#
# Environment:
#   CARGO_TARGET_DIR          build directory (default /var/tmp/rkubelet-target)
#   RKUBELET_CI_BASE          containerd base dir (default /var/tmp/rkubelet-ci/containerd)
#   RKUBELET_TEST_TIMEOUT     seconds for `cargo test` (default 2700)
#   RKUBELET_BUILD_TIMEOUT    seconds for `cargo clippy` and for the packages' release build
#                             (default 3600 each, a cold build is ~10 min)
#   RKUBELET_FUZZ_SECONDS     seconds each fuzz target runs in the smoke step (default 15)
#   RKUBELET_MIN_FREE_GIB     below this many GiB free under /var/tmp, old test binaries and
#                             incremental caches in the build directories are removed first
#                             (default 20)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

ci_base="${RKUBELET_CI_BASE:-/var/tmp/rkubelet-ci/containerd}"
test_timeout="${RKUBELET_TEST_TIMEOUT:-2700}"
build_timeout="${RKUBELET_BUILD_TIMEOUT:-3600}"
started_at=$SECONDS

section() { printf '\n==================== %s ====================\n' "$*"; }
elapsed() { echo "($((SECONDS - started_at)) s since start)"; }

if [[ $EUID -ne 0 ]]; then
    echo "tests/run.sh: needs root for containerd and network namespaces; run it as root" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
section "1/8 host set-up"
bash packaging/host-setup.sh

# ---------------------------------------------------------------------------------------------
section "2/8 rust toolchain"
# sudo may reset PATH: look for the rustup toolchain in the usual places.
if ! command -v cargo >/dev/null 2>&1; then
    for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
        if [[ -x "$d/cargo" ]]; then PATH="$d:$PATH"; break; fi
    done
fi
command -v cargo >/dev/null 2>&1 || { echo "tests/run.sh: cargo not found" >&2; exit 1; }
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rkubelet-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo --version
cargo fmt --version
cargo clippy --version
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

# The build directories are kept between runs and only grow: a test binary rebuilt under a
# new hash leaves the old one behind, and the incremental caches pile up. The e2e kubelets
# report DiskPressure when the disk they share with the builds runs low, so below
# $min_free_gib GiB free the incremental caches and the test binaries no build has written
# for a day are removed (cargo rebuilds what it still needs).
min_free_gib="${RKUBELET_MIN_FREE_GIB:-20}"
free_gib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print int($4 / 1048576) }'; }
prune_build_dirs() {
    local dir free
    free="$(free_gib /var/tmp)"
    [[ -n "$free" && "$free" -lt "$min_free_gib" ]] || return 0
    echo "only $free GiB free under /var/tmp: pruning old build output"
    for dir in "$CARGO_TARGET_DIR" "${RKUBELET_FUZZ_TARGET:-/var/tmp/rkubelet-fuzz-target}"; do
        [[ -d "$dir" ]] || continue
        # <dir>/<profile>/ holds build scripts and proc-macros, <dir>/<triple>/<profile>/ the
        # rest (builds name their target, see .cargo/config.toml).
        rm -rf "$dir"/*/incremental "$dir"/*/*/incremental
        find "$dir"/*/deps "$dir"/*/*/deps -maxdepth 1 -type f -perm -u+x ! -name '*.so' \
            -mtime +0 -delete 2>/dev/null || true
    done
    echo "$(free_gib /var/tmp) GiB free under /var/tmp after pruning"
}
prune_build_dirs

failed=()

# ---------------------------------------------------------------------------------------------
section "3/8 cargo fmt --all -- --check"
if timeout --foreground -k 10 600 cargo fmt --all -- --check </dev/null; then
    echo "fmt: ok"
else
    failed+=("fmt")
    echo "fmt: FAILED (run 'cargo fmt --all')"
fi

# ---------------------------------------------------------------------------------------------
section "4/8 cargo clippy --all-targets -- -D warnings $(elapsed)"
if timeout --foreground -k 30 "$build_timeout" cargo clippy --all-targets -- -D warnings </dev/null; then
    echo "clippy: ok"
else
    failed+=("clippy")
    echo "clippy: FAILED"
fi

# ---------------------------------------------------------------------------------------------
section "5/8 containerd for e2e tests $(elapsed)"
test_log="$(mktemp /tmp/rkubelet-test-log.XXXXXX)"
test_rc=0
# shellcheck disable=SC2317  # called through the EXIT trap
on_exit() {
    local rc=$?
    if ((test_rc != 0)) && [[ -f "$ci_base/containerd.log" ]]; then
        section "last lines of $ci_base/containerd.log"
        tail -n 30 "$ci_base/containerd.log" || true
    fi
    section "stopping containerd"
    bash "$repo_root/packaging/containerd.sh" stop "$ci_base" || echo "containerd stop reported a problem"
    # One closing line with the totals of every `test result:` line cargo printed.
    awk '/^test result: / {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed/) p += $i
                if ($(i + 1) ~ /^failed/) f += $i
                if ($(i + 1) ~ /^ignored/) s += $i
            }
        }
        END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$test_log" || true
    rm -f "$test_log"
    return "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sock="$(bash packaging/containerd.sh start "$ci_base")"
export RKUBELET_E2E=1
export RKUBELET_E2E_CRI_ENDPOINT="unix://$sock"
echo "RKUBELET_E2E=1 RKUBELET_E2E_CRI_ENDPOINT=$RKUBELET_E2E_CRI_ENDPOINT"

# ---------------------------------------------------------------------------------------------
section "6/8 cargo test --no-fail-fast --all-targets -- --include-ignored $(elapsed)"
set +e
timeout --foreground -k 30 "$test_timeout" cargo test --no-fail-fast --all-targets -- --include-ignored </dev/null 2>&1 \
    | tee "$test_log"
test_rc=${PIPESTATUS[0]}
set -e
((test_rc == 0)) || failed+=("tests (exit $test_rc)")

# ---------------------------------------------------------------------------------------------
section "7/8 packages: build, install, check, purge $(elapsed)"
packages_dir="$(mktemp -d /tmp/rkubelet-packages-out.XXXXXX)"
# build-packages.sh prints the .deb's path, then the .rpm's.
if built="$(timeout --foreground -k 30 "$build_timeout" bash packaging/build-packages.sh "$packages_dir" </dev/null)" \
    && mapfile -t packages <<<"$built" \
    && timeout --foreground -k 30 900 bash packaging/check-packages.sh "${packages[@]}" </dev/null; then
    echo "packages: ok"
else
    failed+=("packages")
    echo "packages: FAILED"
fi
rm -rf "$packages_dir"

# ---------------------------------------------------------------------------------------------
section "8/8 fuzz smoke: every target for ${RKUBELET_FUZZ_SECONDS:-15} s $(elapsed)"
if timeout --foreground -k 30 "$build_timeout" bash tests/fuzz/run.sh "${RKUBELET_FUZZ_SECONDS:-15}" </dev/null; then
    echo "fuzz: ok"
else
    failed+=("fuzz")
    echo "fuzz: FAILED"
fi

# ---------------------------------------------------------------------------------------------
section "summary $(elapsed)"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    ((test_rc != 0)) && exit "$test_rc"
    exit 1
fi
echo "all checks passed: fmt, clippy, tests, packages, fuzz smoke"
