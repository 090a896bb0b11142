#!/usr/bin/env bash
# Soak: a client proxy and three server proxies over mTLS, certificates of 60 s,
# the endpoint set changing every second, at half the measured capacity, for
# SOAK_MINUTES (30); prints each proxy's resident memory, open fds and live tasks
# every minute and their slope at the end. Not part of CI.
#
#   tests/bench/soak.sh
#   SOAK_MINUTES=60 SOAK_RPS=2000 tests/bench/soak.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
cargo build --release -q --workspace --bins
target=${CARGO_TARGET_DIR:-$repo/target}
WEFT_BIN_DIR="$target/release" RUST_BACKTRACE=0 \
    cargo run --release -q -p weft-tests --example soak
