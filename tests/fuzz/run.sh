#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz under AFL++ (afl.rs, stable toolchain) for a bounded
# time each, on its seed corpus (tests/fuzz/corpus/<target>), and reports per target the
# executions, the coverage (AFL's bitmap) and the crashes and hangs found.
#
#   tests/fuzz/run.sh [seconds per target] [target...]     (default: 20 s, every target)
#
# With RKUBELET_FUZZ_EXECS=N a target also stops after N executions (whichever comes first).
#
# Exit status: non-zero if any target crashed or hung, or could not be built or run.
# Findings stay in $RKUBELET_FUZZ_OUT/<target>/default/{crashes,hangs} (default
# /var/tmp/rkubelet-fuzz-out); replay one with `<target dir>/<host triple>/release/<target> < file`.
# Installs cargo-afl (crates.io) and builds AFL++ on first use. Builds go to
# $RKUBELET_FUZZ_TARGET (default /var/tmp/rkubelet-fuzz-target).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:-20}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(manifest kubelet_config kubeconfig watch_stream http_request cri_log values pod_to_cri)
fi
out="${RKUBELET_FUZZ_OUT:-/var/tmp/rkubelet-fuzz-out}"
export CARGO_TARGET_DIR="${RKUBELET_FUZZ_TARGET:-/var/tmp/rkubelet-fuzz-target}"

if ! cargo afl --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-afl"
    cargo install --locked cargo-afl@0.18.2
fi
# AFL++ itself (afl-fuzz and its runtime), built once per cargo-afl version.
if [[ "$(cargo afl fuzz -h 2>&1 || true)" != *fuzzed_app* ]]; then
    echo "fuzz: building AFL++"
    cargo afl config --build --force
fi

cd "$here"
cargo afl build --release --bins
# Builds name their target (the repository's .cargo/config.toml): outputs are under the triple.
bin_dir="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"

# No CPU governor or core dump set-up is needed for short bounded runs on a test machine.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
    AFL_NO_AFFINITY=1

limit=()
if [[ -n "${RKUBELET_FUZZ_EXECS:-}" ]]; then
    limit=(-E "$RKUBELET_FUZZ_EXECS")
fi

status=0
printf '%-16s %12s %10s %8s %8s %6s\n' target execs execs/s coverage crashes hangs
for t in "${targets[@]}"; do
    rm -rf "${out:?}/$t"
    mkdir -p "$out/$t"
    # -V: stop after that many seconds (-E: or executions); -t: a single input taking over 2 s is a hang;
    # -c -: no CMPLOG pass (its second fork server times out on these binaries).
    if ! cargo afl fuzz -c - -i "corpus/$t" -o "$out/$t" -V "$seconds" "${limit[@]}" -t 2000 -m none \
        "$bin_dir/$t" >"$out/$t/afl.log" 2>&1; then
        echo "fuzz: $t: afl-fuzz failed, see $out/$t/afl.log:" >&2
        tail -20 "$out/$t/afl.log" >&2
        status=1
        continue
    fi
    stats="$out/$t/default/fuzzer_stats"
    get() { sed -n "s/^$1 *: *//p" "$stats"; }
    crashes=$(find "$out/$t/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
    hangs=$(find "$out/$t/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
    printf '%-16s %12s %10s %8s %8s %6s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" \
        "$(get bitmap_cvg)" "$crashes" "$hangs"
    if [[ $crashes -gt 0 || $hangs -gt 0 ]]; then
        status=1
        for f in "$out/$t/default/crashes"/id:* "$out/$t/default/hangs"/id:*; do
            [[ -f $f ]] && echo "fuzz: $t: finding $f"
        done
    fi
done
exit $status
