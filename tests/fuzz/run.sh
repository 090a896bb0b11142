#!/usr/bin/env bash
# Runs Weft's fuzz targets (cargo-fuzz, libFuzzer) on the stable toolchain, each for
# SECONDS_PER_TARGET seconds, and prints executions, coverage and crashes per target.
#
#   tests/fuzz/run.sh                 every target, 60 s each
#   SECONDS_PER_TARGET=5 tests/fuzz/run.sh mesh_yaml csr
#
# The committed seeds (seeds/<target>/) start each corpus; the growing corpus, the
# build and any crash artefacts live outside the clone (WEFT_FUZZ_CACHE, default
# /var/cache/weft/fuzz). Exits non-zero when any target crashed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds=${SECONDS_PER_TARGET:-60}
cache=${WEFT_FUZZ_CACHE:-/var/cache/weft/fuzz}
export CARGO_TARGET_DIR="$cache/target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cd "$here"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$here")
fi

cargo fuzz build --sanitizer none --fuzz-dir "$here" >&2

failed=0
printf '%-20s %12s %8s %8s %s\n' target executions cov features result
for t in "${targets[@]}"; do
    corpus="$cache/corpus/$t"
    artifacts="$cache/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$cache/$t.log"
    result=ok
    if ! cargo fuzz run --sanitizer none --fuzz-dir "$here" "$t" "$corpus" "$here/seeds/$t" -- \
        -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1 \
        >"$log" 2>&1; then
        result="CRASH (see $log and $artifacts)"
        failed=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    printf '%-20s %12s %8s %8s %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit "$failed"
