#!/usr/bin/env bash
# Builds weft-proxy with profile-guided optimisation: the build the Dockerfile ships
# and the benchmarks measure.
#
#   1. an instrumented build (-Cprofile-generate);
#   2. a training run on loopback, bounded by request counts: HTTP/1.1 and h2c (h2load)
#      through one proxy in front of bench-upstream, through an outbound -> inbound
#      pair in plaintext, and through one over mTLS with certificates from
#      weft-control's development CA (the same paths tests/bench measures, plus mTLS:
#      the listeners are generic over their stream type, so each is its own code),
#      and through one proxy whose service has timeouts, retries and a circuit
#      breaker on, which take their own code paths per request;
#   3. llvm-profdata merge;
#   4. the final build (-Cprofile-use).
#
# Why: the proxy's hot path is spread over hyper, h2, tokio and our own layers; the
# profile lets LLVM inline and lay out code for the paths requests take. Measured on
# the proxy.sh single-proxy path, 3 alternating rounds against the same build without
# it: user CPU per request -21% for HTTP/1.1 and -24% for HTTP/2; with 16 KB request
# bodies, which the training does not send, -13% and -22%. Paths it does not run at
# all are laid out as cold code: opaque TCP measured the same with and without (its
# cost is all kernel time); gRPC streaming has not been measured.
#
# Usage: proxy/pgo.sh [--target TRIPLE] [--profile NAME] [--out FILE]
#   --target   cargo target (default: the host)
#   --profile  cargo profile of weft-proxy (default: sidecar)
#   --out      copy the optimised binary there
# The last line on stdout is the optimised binary's path. Both builds of the proxy use
# their own target directories (CARGO_TARGET_DIR, default <repo>/target, plus
# /pgo-generate and /pgo-use), since their RUSTFLAGS differ; bench-upstream and
# weft-control (release) are built in CARGO_TARGET_DIR itself.
# Environment: BASE_PORT (default 29950; uses BASE_PORT..+20 on 127.0.0.1),
#   KEEP_LOGS=1 keeps the work directory.
# Needs: llvm-tools (rustup component add llvm-tools), h2load (nghttp2-client), curl.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bench=$repo/tests/bench

target=""
profile=sidecar
out=""
while (($#)); do
    case $1 in
    --target) target=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--target TRIPLE] [--profile NAME] [--out FILE]" >&2; exit 2 ;;
    esac
done

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    echo "missing llvm-profdata: rustup component add llvm-tools" >&2
    exit 1
fi
for tool in h2load curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing $tool: apt-get install -y nghttp2-client curl" >&2
        exit 1
    fi
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
target_args=()
sub=""
if [[ -n $target ]]; then
    target_args=(--target "$target")
    sub="$target/"
fi
BASE_PORT=${BASE_PORT:-29950}
port() { echo $((BASE_PORT + $1)); }

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-pgo.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ "${KEEP_LOGS:-0}" == 1 ]]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

build() { # TARGET_DIR RUSTFLAGS cargo-args...
    local dir=$1 flags=$2
    shift 2
    (cd "$repo" && CARGO_TARGET_DIR=$dir RUSTFLAGS=$flags cargo build --locked --quiet "$@")
}

echo "pgo: building the helpers and the instrumented weft-proxy ($profile, ${target:-host})..." >&2
build "$target_dir" "${RUSTFLAGS:-}" --release "${target_args[@]}" -p weft-control
build "$target_dir" "${RUSTFLAGS:-}" --release "${target_args[@]}" -p weft-tests --bin bench-upstream
# Fixed paths for the profiles: RUSTFLAGS that change from run to run would rebuild
# every dependency each time.
profraw=$target_dir/pgo-generate/profraw
# Moves of up to 512 bytes (a Request is 272) are inlined as vector loads and stores
# rather than calls to the C library's memcpy; musl's is `rep movsq`, slow to start
# for copies this small, and a request makes over a hundred of them. Measured on the
# shipped build (with the HTTP/2 upstream stream boxed, worth ~1.3% of it): memcpy
# fell from 18% to 4% of the proxy's perf samples under h2load, and instructions per
# request from 35.4k to 32.3k (h2c) and 18.4k to 17.6k (HTTP/1.1), callgrind.
proxy_flags="${RUSTFLAGS:-} -Cllvm-args=--max-store-memcpy=32"
# A static-pie binary applies its relative relocations at start-up; as RELA (24 bytes
# each, ~15k of them) that table is read whole and stays resident, ~0.36 MB of the
# idle sidecar's RSS. Packed as RELR (musl >= 1.2.4, which Rust bundles) it is ~7 KB.
if [[ $target == *musl ]]; then
    proxy_flags="$proxy_flags -Clink-arg=-Wl,-z,pack-relative-relocs"
fi
profile_data=$target_dir/pgo-use/weft-proxy.profdata
rm -rf "$profraw"
mkdir -p "$target_dir/pgo-use"
build "$target_dir/pgo-generate" "$proxy_flags -Cprofile-generate=$profraw" \
    --profile "$profile" "${target_args[@]}" -p weft-proxy
upstream_bin=$target_dir/${sub}release/bench-upstream
control_bin=$target_dir/${sub}release/weft-control
weft_bin=$target_dir/pgo-generate/${sub}$profile/weft-proxy

render() { # TEMPLATE OUT NAME=VALUE...
    local template=$1 dest=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$bench/$template" >"$dest"
}
started=
start() { # NAME COMMAND...
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
}
wait_ready() { # NAME URL
    local i
    for ((i = 0; i < 200; i++)); do
        if curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "pgo: $1 did not become ready at $2" >&2
    cat "$work/$1.log" >&2 || true
    exit 1
}
# load URL: bounded HTTP/1.1 and h2c runs; any failed request stops the build.
load() {
    local url=$1 flags
    for flags in "--h1 -c50 -n30000" "-c10 -m10 -n60000"; do
        # shellcheck disable=SC2086 # flags are words on purpose
        if ! timeout 120 h2load $flags "$url" >"$work/h2load.out" 2>&1 \
            || ! grep -q " 0 failed, 0 errored" "$work/h2load.out"; then
            echo "pgo: training load on $url failed:" >&2
            cat "$work/h2load.out" >&2
            exit 1
        fi
    done
}

UPSTREAM=$(port 0)
start upstream "$upstream_bin" "127.0.0.1:$UPSTREAM"
wait_ready upstream "http://127.0.0.1:$UPSTREAM/"

printf 'services: []\n' >"$work/mesh.yaml"
RUST_LOG=warn start control "$control_bin" serve --mesh "$work/mesh.yaml" \
    --grpc "127.0.0.1:$(port 1)" --admin "127.0.0.1:$(port 2)" --state-dir "$work/cp"
wait_ready control "http://127.0.0.1:$(port 2)/ready"
token() { "$control_bin" token --state-dir "$work/cp" --service-account "$1"; }

render weft-client.yaml.in "$work/single.yaml" ID=pgo-single OUTBOUND_PORT="$(port 3)" \
    ADMIN_PORT="$(port 4)" LISTEN_PORT="$(port 5)" ENDPOINT="127.0.0.1:$UPSTREAM"
render weft-mtls-client.yaml.in "$work/a.yaml" OUTBOUND_PORT="$(port 6)" \
    ADMIN_PORT="$(port 7)" LISTEN_PORT="$(port 8)" ENDPOINT="127.0.0.1:$(port 9)" \
    TOKEN="$(token bench-client)" CP_PORT="$(port 1)" H1_OVER_H2=true
render weft-mtls-server.yaml.in "$work/b.yaml" OUTBOUND_PORT="$(port 10)" \
    ADMIN_PORT="$(port 11)" LISTEN_PORT="$(port 9)" ENDPOINT="127.0.0.1:$UPSTREAM" \
    TOKEN="$(token bench-server)" CP_PORT="$(port 1)"
render weft-client.yaml.in "$work/pa.yaml" ID=pgo-pa OUTBOUND_PORT="$(port 12)" \
    ADMIN_PORT="$(port 13)" LISTEN_PORT="$(port 14)" ENDPOINT="127.0.0.1:$(port 15)"
render weft-server.yaml.in "$work/pb.yaml" ID=pgo-pb OUTBOUND_PORT="$(port 16)" \
    ADMIN_PORT="$(port 17)" LISTEN_PORT="$(port 15)" ENDPOINT="127.0.0.1:$UPSTREAM"
cat >"$work/guarded.yaml" <<CONF
workers: 1
node: {id: pgo-guarded, namespace: default, workload: bench-client}
outbound: {listen: 127.0.0.1:$(port 18)}
admin: {listen: 127.0.0.1:$(port 19)}
upstreams:
  - {service: guarded, listen: 127.0.0.1:$(port 20)}
services:
  - name: guarded
    namespace: default
    endpoints:
      - {address: 127.0.0.1:$UPSTREAM}
$(grep -v '^#' "$bench/guarded-policy.yaml")
CONF

proxies=()
for name in single a b pa pb guarded; do
    RUST_LOG=warn start "$name" "$weft_bin" run --config "$work/$name.yaml"
    proxies+=("$started")
done
wait_ready single "http://127.0.0.1:$(port 4)/ready"
wait_ready a "http://127.0.0.1:$(port 7)/ready"
wait_ready b "http://127.0.0.1:$(port 11)/ready"
wait_ready pa "http://127.0.0.1:$(port 13)/ready"
wait_ready pb "http://127.0.0.1:$(port 17)/ready"
wait_ready guarded "http://127.0.0.1:$(port 19)/ready"

echo "pgo: training..." >&2
load "http://127.0.0.1:$(port 5)/"
load "http://127.0.0.1:$(port 8)/"
load "http://127.0.0.1:$(port 14)/"
load "http://127.0.0.1:$(port 20)/"

# The profile is written when a proxy exits; SIGTERM is its graceful shutdown.
for pid in "${proxies[@]}"; do kill -TERM "$pid"; done
for pid in "${proxies[@]}"; do
    if ! wait "$pid"; then
        echo "pgo: a training proxy did not exit cleanly" >&2
        exit 1
    fi
done
shopt -s nullglob
raw=("$profraw"/*.profraw)
if ((${#raw[@]} == 0)); then
    echo "pgo: the training run wrote no profile" >&2
    exit 1
fi
"$profdata" merge -o "$profile_data" "${raw[@]}"

echo "pgo: building the optimised weft-proxy..." >&2
build "$target_dir/pgo-use" "$proxy_flags -Cprofile-use=$profile_data" \
    --profile "$profile" "${target_args[@]}" -p weft-proxy
result=$target_dir/pgo-use/${sub}$profile/weft-proxy
if [[ -n $out ]]; then
    cp "$result" "$out"
    result=$out
fi
echo "$result"
